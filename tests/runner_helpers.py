"""Shared set-up for tests that run real workers: a tiny image that writes an empty, valid output after
a delay, and validated submissions of it on han-oar-22 demo cases."""

from __future__ import annotations

from pathlib import Path

from arena.lifecycle import SubmissionStatus

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import os, time, SimpleITK as sitk
d = "/input/images/ct"; img = sitk.ReadImage(os.path.join(d, os.listdir(d)[0]))
time.sleep(float(os.environ.get("DELAY", "0")))
out = sitk.Image(img.GetSize(), sitk.sitkUInt8); out.CopyInformation(img)
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
sitk.WriteImage(out, "/output/images/oar-segmentation/out.mha")
"""


def build_writer_image(tmp_path: Path, base_image: str, delay_s: float, tag: str) -> str:
    """An image that waits ``delay_s`` seconds per case, then writes an all-background label map."""
    from arena.images.build import build_image

    d = tmp_path / "writer-image"
    d.mkdir()
    (d / "run.py").write_text(WRITER)
    (d / "Dockerfile").write_text(f'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nENV DELAY={delay_s}\nCOPY run.py /run.py\n'
                                  'ENTRYPOINT ["python3", "/run.py"]\n')
    return build_image(str(d), tag, base_image, log=lambda s: None)


def validated_submissions(db, settings, image_id: str, n_submissions: int, n_validation_cases: int) -> list[int]:
    """han-oar-22 with demo cases and ``n_submissions`` validated submissions of ``image_id`` (one team each)."""
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 2 * n_validation_cases)  # round-robin over the two phases
    ids = []
    for i in range(n_submissions):
        user, _ = create_user(db, f"u{i}", team=f"Team {i}")
        sub = create_submission(db, "han-oar-22", "validation", user,
                                StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
        sub.set_status(SubmissionStatus.VALIDATED)
        sub.image_id = image_id
        ids.append(sub.id)
    db.commit()
    return ids


def wait_for_case_container(docker_engine, evaluation_id: int, timeout_s: float = 90) -> None:
    """Block until a container of the evaluation runs (a case has started); fail after ``timeout_s``."""
    import time

    label = f"arena.evaluation={evaluation_id}"
    deadline = time.monotonic() + timeout_s
    while not docker_engine.containers.list(filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_engine.containers.list(filters={"label": label}), "the first case never started"


def wait_finished(db, evaluation_id: int, timeout_s: float = 180):
    """The evaluation once it has finished (or as it is after ``timeout_s``)."""
    import time

    from arena.models import Evaluation

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        db.expire_all()
        if db.get(Evaluation, evaluation_id).status.finished:
            break
        time.sleep(0.5)
    return db.get(Evaluation, evaluation_id)


def case_counts(db, evaluation_id: int) -> list[int]:
    """How many result rows each case of the evaluation has (each must be 1: no case recorded twice)."""
    from sqlalchemy import func, select

    from arena.models import CaseResult

    return [n for _, n in db.execute(select(CaseResult.case_id, func.count()).where(
        CaseResult.evaluation_id == evaluation_id).group_by(CaseResult.case_id)).all()]

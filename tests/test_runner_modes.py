"""Evaluation modes on the real engine: batch I/O, smoke case and fail-fast, evaluation timeout, GPU routing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from arena.lifecycle import EvaluationStatus, SubmissionStatus
from arena.models import Evaluation, Submission

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module")
def images(docker_engine, base_image, tmp_path_factory):
    from arena.images.build import build_image

    d = tmp_path_factory.mktemp("imgs")
    good = build_image(str(REPO / "examples" / "threshold-segmenter"), "arena-test/threshold:modes", base_image,
                       log=lambda s: None)
    (d / "bad").mkdir()
    (d / "bad" / "Dockerfile").write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n'
                                          'ENTRYPOINT ["python3", "-c", "import sys; sys.exit(\'no weights\')"]\n')
    bad = build_image(str(d / "bad"), "arena-test/bad:modes", base_image, log=lambda s: None)
    (d / "slow").mkdir()
    (d / "slow" / "Dockerfile").write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n'
                                           'ENTRYPOINT ["python3", "-c", "import time; time.sleep(30)"]\n')
    slow = build_image(str(d / "slow"), "arena-test/slow:modes", base_image, log=lambda s: None)
    return {"good": good, "bad": bad, "slow": slow}


def _evaluation(settings, db, image_id: str, n_cases: int, **resources) -> int:
    """A validated submission of ``image_id`` with a queued evaluation, on a task tweaked by ``resources``."""
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    spec = dict(task.spec)
    io_mode = resources.pop("io_mode", "per-case")
    spec["io_mode"] = io_mode
    spec["resources"] = {**spec["resources"], **resources}
    task.spec = spec
    load_demo_cases(db, settings, task, n_cases * 2)  # round-robin: n_cases in validation
    user, _ = create_user(db, f"u{image_id[7:15]}", team="T")
    sub = create_submission(db, "han-oar-22", "validation", user, StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    sub.image_id = image_id
    ev = Evaluation(submission=sub, status=EvaluationStatus.QUEUED, cases_total=n_cases)
    db.add(ev)
    db.commit()
    return ev.id


def _run(db, ev_id):
    from arena.runner.jobs import run_evaluation

    status = run_evaluation(ev_id)
    db.expire_all()
    return status, db.get(Evaluation, ev_id)


def test_batch_mode_runs_once_and_scores_each_case(settings, db, images, docker_engine):
    ev_id = _evaluation(settings, db, images["good"], 3, io_mode="batch")
    status, ev = _run(db, ev_id)
    assert status == "succeeded", ev.error
    assert [cr.case.key for cr in ev.case_results] == ["demo-000", "demo-002", "demo-004"]
    assert all(cr.status.value == "succeeded" for cr in ev.case_results)
    assert "batch mode: 3 cases" in ev.case_results[0].log_tail  # one container saw all three
    dice = {cr.case.key: next(m.value for m in cr.metrics if m.label == 21 and m.metric == "dice")
            for cr in ev.case_results}
    assert min(dice.values()) > 0.5
    mine = [f"arena.evaluation={ev_id}", f"arena.queue={os.environ['ARENA_QUEUE']}"]  # IDs repeat across test DBs
    assert not docker_engine.containers.list(all=True, filters={"label": mine})


def test_fail_fast_skips_the_rest(settings, db, images):
    ev_id = _evaluation(settings, db, images["bad"], 3, fail_fast=True)
    status, ev = _run(db, ev_id)
    assert status == "failed"
    assert [cr.failure for cr in ev.case_results] == ["non-zero-exit", "skipped", "skipped"]
    assert "no weights" in ev.case_results[0].error
    assert "case 1 failed and the task fails fast" in ev.case_results[1].error


def test_without_fail_fast_every_case_runs(settings, db, images):
    ev_id = _evaluation(settings, db, images["bad"], 2)
    status, ev = _run(db, ev_id)
    assert status == "failed" and ev.error.startswith("all 2 cases failed")
    assert [cr.failure for cr in ev.case_results] == ["non-zero-exit", "non-zero-exit"]


def test_evaluation_timeout(settings, db, images):
    ev_id = _evaluation(settings, db, images["slow"], 3, time_per_case_s=60, time_per_evaluation_s=3)
    status, ev = _run(db, ev_id)
    assert status == "failed"
    failures = [cr.failure for cr in ev.case_results]
    assert failures[0] == "timeout" and failures[1:] == ["evaluation-timeout", "evaluation-timeout"]
    assert ev.case_results[0].runtime_s < 20


def test_gpu_task_without_gpu(settings, db, images, monkeypatch):
    monkeypatch.delenv("ARENA_GPU_DEVICES", raising=False)
    ev_id = _evaluation(settings, db, images["good"], 2, gpu=True)
    status, ev = _run(db, ev_id)
    assert status == "failed" and "needs a GPU" in ev.error
    assert [cr.failure for cr in ev.case_results] == ["no-gpu", "no-gpu"]
    assert ev.fault == "platform"  # the worker's, not the team's: not charged to its quota


def test_a_submission_that_fails_every_case_is_charged(settings, db, images):
    """A failure the submission caused is charged; one the platform caused is not (decided by type)."""
    from arena.submissions.intake import quota

    ev_id = _evaluation(settings, db, images["bad"], 2)
    status, ev = _run(db, ev_id)
    assert status == "failed" and ev.fault == "participant"
    _, used = quota(db, ev.submission.task, ev.submission.phase, ev.submission.team)
    assert used == 1


def test_gpu_tasks_have_their_own_queue(settings, db, images, redis_url, monkeypatch):
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    from arena.config import load_settings
    from arena.runner.jobs import create_evaluation, get_queue

    s = load_settings()
    ev_id = _evaluation(settings, db, images["good"], 1, gpu=True)
    sub_id = db.get(Evaluation, ev_id).submission_id
    create_evaluation(s, sub_id)
    assert get_queue(s, gpu=True).count == 1 and get_queue(s).count == 0
    get_queue(s, gpu=True).empty()


def test_evicted_image_is_reloaded_from_the_store(settings, docker_engine, base_image, tmp_path):
    """A worker whose LRU removed the image loads it again from the uploaded tarball."""
    from arena.images.build import build_image, save_image
    from arena.runner.jobs import _ensure_image
    from arena.submissions.archive import inspect_image_archive

    d = tmp_path / "tiny"
    d.mkdir()
    (d / "Dockerfile").write_text(f'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nLABEL arena.test.reload="{tmp_path.name}"\n')
    image_id = build_image(str(d), f"arena-test/reload:{tmp_path.name}", base_image, log=lambda s: None)
    tar = save_image(image_id, str(tmp_path / "tiny.tar.gz"))
    docker_engine.images.remove(image_id, force=True)
    sub = Submission(id=987654, image_id=inspect_image_archive(tar).image_id, upload_path=tar,
                     image_tag=f"arena-test/reload:{tmp_path.name}")
    assert _ensure_image(docker_engine, sub, settings) == image_id
    assert docker_engine.images.get(image_id).id == image_id
    docker_engine.images.remove(image_id, force=True)


def test_arena_try(images, tmp_path):
    """The participant harness: the platform's code path on sample cases, plus the docker run line."""
    from click.testing import CliRunner

    from arena.cli import main
    from arena.images.build import save_image

    tar = save_image(images["good"], str(tmp_path / "good.tar.gz"))
    res = CliRunner().invoke(main, ["try", tar, "--task", str(REPO / "tasks" / "han-oar-22"), "--cases", "1"])
    assert res.exit_code == 0, res.output
    assert "sample-000: ok" in res.output and "1/1 cases ok" in res.output
    assert "--network none" in res.output and "--cap-drop ALL" in res.output and "--read-only" in res.output
    bad = CliRunner().invoke(main, ["try", images["bad"], "--task", str(REPO / "tasks" / "han-oar-22"), "--cases", "1"])
    assert bad.exit_code == 1 and "FAILED [non-zero-exit]" in bad.output and "no weights" in bad.output
    missing = CliRunner().invoke(main, ["try", "no-such-image:1", "--task", str(REPO / "tasks" / "han-oar-22")])
    assert missing.exit_code == 2 and "no local image and no file" in missing.output


@pytest.mark.parametrize("slug,labels", [("han-oar-22", 22), ("han-oar-9", 9), ("thoracic-oar-6", 6)])
def test_try_samples_come_from_the_tasks_own_generator(tmp_path, slug, labels):
    """`arena try` on a CT task without samples/ gets phantoms with that task's label map (not always the
    22-organ one)."""
    import SimpleITK as sitk

    from arena.runner.harness import sample_cases
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / slug)
    cases = sample_cases(REPO / "tasks" / slug, spec, 1, "small", tmp_path)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(cases[0].reference)))
    assert set(np.unique(ref)) - {0} <= set(spec.labels) and len(set(np.unique(ref)) - {0}) >= labels - 1


@pytest.mark.parametrize("slug", ["signet-ring-cells", "colon-tissue"])
def test_try_samples_for_tile_tasks(tmp_path, slug):
    """A tile task without samples/ gets the kind's synthetic tiles (a positive and a negative), which its
    own reference reader reads: `arena try` works for every shipped task."""
    from arena.kinds import kind_for
    from arena.runner.harness import sample_cases
    from arena.tasks.spec import load_spec

    spec = load_spec(REPO / "tasks" / slug)
    cases = sample_cases(REPO / "tasks" / slug, spec, 2, "small", tmp_path)
    refs = [kind_for(spec).load_reference(spec, c.reference, c.image) for c in cases]
    assert [c.image.suffix for c in cases] == [".tif", ".tif"] and all(r.width == r.height == 384 for r in refs)

"""han-oar-openkbp on the real OpenKBP data: OpenKBP's own split as phases, idempotent loading from a named
data folder, the training-data archive (CLI and web), and bad data folders refused with nothing loaded."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from sqlalchemy import func, select

from tests.openkbp_helpers import openkbp_folder
from tests.web_helpers import make_user, sign_in

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "tasks" / "han-oar-openkbp"


def _load(*args: str):
    from arena.cli import main

    return CliRunner().invoke(main, ["task", "load", str(TASK_DIR), *args], catch_exceptions=False)


def test_full_openkbp_split_loads_idempotently(settings, db, shared_data):
    from arena.models import Case, Task
    from arena.tasks.training import read_manifest

    r = _load()
    assert r.exit_code == 0, r.output
    assert "validation 33 cases, test 53 cases" in r.output
    task = db.scalar(select(Task).where(Task.slug == "han-oar-openkbp"))
    rows = json.loads((shared_data / "openkbp" / "cases.json").read_text())
    split = {r["patient"].replace("_", "-"): r["openkbp_split"] for r in rows}
    for phase in task.phases:
        assert {c.key for c in phase.cases} == {k for k, s in split.items() if s == phase.slug}
    manifest = read_manifest(settings, "han-oar-openkbp")
    assert manifest["cases"] == 170
    assert {e["key"] for e in manifest["files"]} == {k for k, s in split.items() if s == "train"}
    # "not contoured" is carried with the case, and such organs are not scored
    case = db.scalar(select(Case).where(Case.key == "pt-243"))
    assert set(case.meta["not_contoured"]) == {"Esophagus", "Larynx"}
    assert task.spec["empty_policy"]["reference_empty"] == "exclude"
    stamps = {c.key: Path(c.image_path).stat().st_mtime_ns for c in task.cases}
    n = db.scalar(select(func.count(Case.id)))
    db.close()
    r = _load()
    assert r.exit_code == 0, r.output
    db2 = type(db)(bind=db.get_bind())
    assert db2.scalar(select(func.count(Case.id))) == n
    task = db2.scalar(select(Task).where(Task.slug == "han-oar-openkbp"))
    assert {c.key: Path(c.image_path).stat().st_mtime_ns for c in task.cases} == stamps  # nothing re-read


def test_data_folder_and_limit(settings, db, shared_data, tmp_path):
    from arena.models import Task

    folder = tmp_path / "kbp"
    picked = openkbp_folder(shared_data, folder, per_split={"validation": 3, "test": 2, "train": 2})
    r = _load("--data", str(folder), "--limit-cases", "2")
    assert r.exit_code == 0, r.output
    assert "validation 2 cases, test 2 cases" in r.output and "at most 2 per phase" in r.output
    assert "training data: 2 cases" in r.output
    task = db.scalar(select(Task).where(Task.slug == "han-oar-openkbp"))
    case = next(c for c in task.cases if c.key == picked[0]["patient"].replace("_", "-"))
    img = sitk.ReadImage(case.image_path)
    src = sitk.ReadImage(str(shared_data / "openkbp" / f"{picked[0]['patient']}_ct.nii.gz"))
    assert img.GetSize() == src.GetSize() and img.GetSpacing() == pytest.approx(src.GetSpacing())
    assert (sitk.GetArrayFromImage(img) == sitk.GetArrayFromImage(src)).all()


def test_missing_patient_files_refused_with_nothing_loaded(settings, db, shared_data, tmp_path):
    from arena.models import Case

    folder = tmp_path / "kbp"
    picked = openkbp_folder(shared_data, folder, per_split={"validation": 2, "test": 1})
    gone = folder / f"{picked[1]['patient']}_oars.nii.gz"
    gone.unlink()
    r = _load("--data", str(folder))
    assert r.exit_code != 0
    assert str(gone) in r.output and "nothing was loaded" in r.output
    assert db.scalar(select(func.count(Case.id))) == 0
    assert not any((settings.cases_dir / "han-oar-openkbp").glob("pt-*"))


def test_named_data_folder_without_index_is_an_error(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    r = _load("--data", str(tmp_path / "empty"))
    assert r.exit_code != 0 and "cases.json" in r.output


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_training_archive_cli_and_web(settings, db, shared_data, tmp_path, app):
    from arena.cli import main
    from arena.tasks.training import manifest_path

    folder = tmp_path / "kbp"
    picked = openkbp_folder(shared_data, folder, per_split={"validation": 1, "test": 1, "train": 3})
    assert _load("--data", str(folder)).exit_code == 0
    train = [p["patient"] for p in picked if p["openkbp_split"] == "train"]

    out = tmp_path / "download"
    r = CliRunner().invoke(main, ["task", "training-data", "han-oar-openkbp", "--out", str(out)])
    assert r.exit_code == 0, r.output
    root = out / "han-oar-openkbp-training"
    for p in train:
        key = p.replace("_", "-")
        assert (root / "images" / f"{key}.nii.gz").read_bytes() == (folder / f"{p}_ct.nii.gz").read_bytes()
        assert (root / "labels" / f"{key}.nii.gz").read_bytes() == (folder / f"{p}_oars.nii.gz").read_bytes()
    assert json.loads((root / "labels.json").read_text())["7"] == "Mandible"
    assert "OpenKBP" in (root / "README.txt").read_text()
    assert not (out / ".partial").exists()

    make_user(db, "alice", team="A")
    db.commit()
    client = app.test_client()
    assert client.get("/tasks/han-oar-openkbp/training-data").status_code == 302  # sign in first
    sign_in(client, "alice")
    page = client.get("/tasks/han-oar-openkbp").get_data(as_text=True)
    assert "Training data: 3 cases" in page
    r = client.get("/tasks/han-oar-openkbp/training-data")
    body = r.get_data()
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(body)
    members = _members(body)
    assert {n.split("/", 1)[1] for n in members} >= {f"images/{p.replace('_', '-')}.nii.gz" for p in train}
    validation_or_test = [p["patient"].replace("_", "-") for p in picked if p["openkbp_split"] != "train"]
    assert not any(k in n for n in members for k in validation_or_test)  # scored patients never leave

    # a training file replaced on disk after the load: refused, not served
    manifest = json.loads(manifest_path(settings, "han-oar-openkbp").read_text())
    victim = Path(manifest["files"][0]["path"])
    os.unlink(folder / f"{train[0]}_ct.nii.gz")
    (folder / f"{train[0]}_ct.nii.gz").write_bytes(b"not the file")
    assert victim.name.startswith(train[0])
    assert client.get("/tasks/han-oar-openkbp/training-data").status_code == 409
    r = CliRunner().invoke(main, ["task", "training-data", "han-oar-openkbp", "--out", str(tmp_path / "again")])
    assert r.exit_code != 0 and "changed since the task was loaded" in r.output
    assert not (tmp_path / "again" / "han-oar-openkbp-training").exists()


def test_same_size_tampering_is_caught_by_the_checksum(settings, shared_data, tmp_path):
    from arena.tasks.store import CaseSource
    from arena.tasks.training import TrainingDataError, iter_archive, read_manifest, write_manifest

    img, ref = tmp_path / "a_ct.bin", tmp_path / "a_oars.bin"
    img.write_bytes(b"x" * 3000)
    ref.write_bytes(b"y" * 10)
    write_manifest(settings, "t", [CaseSource("a", img, ref, "training")])
    manifest = read_manifest(settings, "t")
    assert sum(len(c) for c in iter_archive(manifest, {1: "X"})) % tarfile.RECORDSIZE == 0
    img.write_bytes(b"z" * 3000)
    with pytest.raises(TrainingDataError, match="a_ct.bin"):
        list(iter_archive(manifest, {1: "X"}))


def test_a_bad_label_map_midway_leaves_nothing_behind(settings, db, shared_data, tmp_path):
    """The third patient's label map holds a value outside the task's map: the first two are not kept."""
    import numpy as np

    from arena.models import Case

    folder = tmp_path / "kbp"
    picked = openkbp_folder(shared_data, folder, per_split={"validation": 3})
    bad = folder / f"{picked[2]['patient']}_oars.nii.gz"
    img = sitk.ReadImage(str(bad))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = 9
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(img)
    bad.unlink()
    sitk.WriteImage(out, str(bad))
    r = _load("--data", str(folder))
    assert r.exit_code != 0 and bad.name in r.output and "9" in r.output
    assert db.scalar(select(func.count(Case.id))) == 0
    assert not any((settings.cases_dir / "han-oar-openkbp").glob("pt-*"))


def test_task_check_reports_phase_and_training_counts(shared_data, tmp_path):
    from arena.tasks.check import check_task

    folder = tmp_path / "kbp"
    openkbp_folder(shared_data, folder, per_split={"validation": 2, "test": 1, "train": 3})
    res = check_task(TASK_DIR, data_root=folder, generate=False)
    assert res.ok, res.problems
    assert "real cases per phase: validation 2, test 1" in res.notes
    assert any(n.startswith("training data: 3 cases") for n in res.notes)

"""`arena task import-cases`: a folder of real OpenKBP cases into a task of the organizer's own, every case
checked before anything is written (issue 14, the organizer's path), and phases that start closed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from click.testing import CliRunner
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
PATIENTS = ("pt_22", "pt_307", "pt_100")


def own_task(tmp_path: Path, slug: str = "kbp-mini", phase_extra: dict | None = None) -> Path:
    """A task.yaml of an organizer's own: OpenKBP's 7 labels, no loader, no generator, phases without
    visibility or dates (so they take the defaults)."""
    spec = yaml.safe_load((REPO / "tasks" / "han-oar-openkbp" / "task.yaml").read_text())
    spec["slug"] = slug
    for key in ("data", "literature"):
        spec.pop(key, None)
    spec["reference_models"] = []
    for p in spec["phases"]:
        p.pop("visibility", None)
        p.pop("opens", None)
        p.update(phase_extra or {})
    d = tmp_path / "tasks" / slug
    d.mkdir(parents=True)
    (d / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (d / "README.md").write_text("An organizer's own head-and-neck task on OpenKBP patients. " * 6)
    return d


def case_folder(shared_data: Path, dest: Path, patients=PATIENTS) -> Path:
    """images/<case>.nii.gz + labels/<case>.nii.gz (copies of the shared OpenKBP files, in tmp)."""
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for p in patients:
        key = p.replace("_", "-")
        shutil.copyfile(shared_data / "openkbp" / f"{p}_ct.nii.gz", dest / "images" / f"{key}.nii.gz")
        shutil.copyfile(shared_data / "openkbp" / f"{p}_oars.nii.gz", dest / "labels" / f"{key}.nii.gz")
    return dest


def cli(*args: str):
    from arena.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def loaded_task(settings, tmp_path):
    d = own_task(tmp_path)
    r = cli("task", "load", str(d))
    assert r.exit_code == 0, r.output
    return d


def _counts(db, settings, slug="kbp-mini"):
    from arena.models import Case

    db.expire_all()
    rows = db.scalar(select(func.count(Case.id)))
    files = sorted(p.name for p in (settings.cases_dir / slug).glob("*")) if (settings.cases_dir / slug).is_dir() else []
    return rows, files


def test_import_with_phase_csv_converts_and_records_geometry(settings, db, shared_data, loaded_task, tmp_path):
    from arena.models import Task

    folder = case_folder(shared_data, tmp_path / "incoming")
    csv = tmp_path / "phases.csv"
    csv.write_text("case,phase\npt-22,validation\npt-307,validation\npt-100,test\n")
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phases-csv", str(csv))
    assert r.exit_code == 0, r.output
    assert "loaded 3 case(s)" in r.output and "1 into test" in r.output and "2 into validation" in r.output
    task = db.scalar(select(Task).where(Task.slug == "kbp-mini"))
    by_phase = {p.slug: sorted(c.key for c in p.cases) for p in task.phases}
    assert by_phase == {"validation": ["pt-22", "pt-307"], "test": ["pt-100"]}
    case = next(c for c in task.cases if c.key == "pt-22")
    assert case.image_path.endswith("image.mha") and case.reference_path.endswith("reference.mha")
    img = sitk.ReadImage(case.image_path)
    assert img.GetSize() == (128, 128, 128) and case.meta["geometry"]["size"] == [128, 128, 128]
    ref = sitk.GetArrayFromImage(sitk.ReadImage(case.reference_path))
    assert case.meta["labels_present"] == sorted(int(v) for v in np.unique(ref) if v)
    # a CSV naming a phase the task lacks: refused, naming the file and line, nothing changed
    csv.write_text("case,phase\npt-22,final\n")
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phases-csv", str(csv), "--phase", "test")
    assert r.exit_code == 2 and f"{csv}:2" in r.output and "unknown phase 'final'" in r.output
    db.expire_all()
    assert {p.slug: sorted(c.key for c in p.cases) for p in task.phases} == by_phase


def _bad_label(folder: Path, key: str, value: int) -> Path:
    path = folder / "labels" / f"{key}.nii.gz"
    ref = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(ref)
    arr[60:62, 60:62, 60:62] = value
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path))
    return path


def test_unknown_label_value_refused_nothing_written(settings, db, shared_data, loaded_task, tmp_path):
    folder = case_folder(shared_data, tmp_path / "incoming")
    bad = _bad_label(folder, "pt-307", 9)
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "test")
    assert r.exit_code == 2
    assert str(bad) in r.output and "label values [9] are not in the task's label map" in r.output
    assert "nothing was loaded" in r.output
    assert _counts(db, settings) == (0, [])  # the two good cases were not loaded either


def test_reference_on_another_grid_refused_with_both_geometries(settings, db, shared_data, loaded_task, tmp_path):
    folder = case_folder(shared_data, tmp_path / "incoming", patients=("pt_22",))
    path = folder / "labels" / "pt-22.nii.gz"
    ref = sitk.ReadImage(str(path))
    ref.SetSpacing((1.0, 1.0, 1.0))  # the right array, 1 mm spacing: resampled it would land in a corner
    sitk.WriteImage(ref, str(path))
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "test")
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert str(path) in out and "reference on another grid" in out
    assert "Reference: size 128×128×128 voxels, spacing 1×1×1 mm" in out and "image: size 128×128×128 voxels, spacing 3.906" in out
    assert _counts(db, settings) == (0, [])


def test_missing_label_map_refused(settings, db, shared_data, loaded_task, tmp_path):
    folder = case_folder(shared_data, tmp_path / "incoming", patients=("pt_22", "pt_307"))
    (folder / "labels" / "pt-307.nii.gz").unlink()
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "test")
    assert r.exit_code == 2
    assert f"{folder / 'labels' / 'pt-307.nii.gz'}: label map missing" in r.output
    assert _counts(db, settings) == (0, [])


def test_dicom_series_with_a_missing_slice_refused(settings, db, shared_data, tmp_path):
    """The real 20-slice TotalSegmentator series with slice 8 taken out: uneven spacing, named."""
    from arena.tasks.case_check import CaseCheckError
    from arena.tasks.importing import import_cases
    from arena.tasks.store import upsert_task

    series = tmp_path / "incoming" / "ct1" / "image"
    shutil.copytree(shared_data / "totalseg" / "example_ct_dicom", series)
    shutil.copyfile(shared_data / "totalseg" / "example_seg_dicom.nii.gz", series.parent / "reference.nii.gz")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))
    assert len(files) == 20
    Path(files[8]).unlink()
    task = upsert_task(db, REPO / "tasks" / "abdomen-totalseg")
    with pytest.raises(CaseCheckError) as e:
        import_cases(db, settings, task, tmp_path / "incoming", ["test"])
    msg = str(e.value)
    assert f"{series}: DICOM series with uneven slice spacing" in msg and "4 mm between" in msg
    assert "spacing is 2 mm" in msg
    assert not (settings.cases_dir / "abdomen-totalseg" / "ct1").exists()


def test_failure_mid_write_leaves_nothing_and_restores_replaced_case(settings, db, shared_data, loaded_task,
                                                                      tmp_path, monkeypatch):
    from arena.models import Case, Task
    from arena.tasks import store

    first = case_folder(shared_data, tmp_path / "first", patients=("pt_22",))
    assert cli("task", "import-cases", "kbp-mini", str(first), "--phase", "validation").exit_code == 0
    stored = settings.cases_dir / "kbp-mini" / "pt-22" / "reference.mha"
    before = stored.read_bytes()

    folder = case_folder(shared_data, tmp_path / "second", patients=("pt_22", "pt_307", "pt_100"))
    real_add = store.add_case
    calls = []

    def failing_add(*a, **kw):
        calls.append(a[3])
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real_add(*a, **kw)

    monkeypatch.setattr(store, "add_case", failing_add)
    r = cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "test")
    assert r.exit_code == 2 and "disk full (simulated)" in r.output and "nothing was loaded" in r.output
    assert calls == ["pt-100", "pt-22", "pt-307"]
    db.expire_all()
    task = db.scalar(select(Task).where(Task.slug == "kbp-mini"))
    assert [c.key for c in db.scalars(select(Case))] == ["pt-22"]  # only the earlier import's case
    assert {p.slug: [c.key for c in p.cases] for p in task.phases} == {"validation": ["pt-22"], "test": []}
    assert sorted(p.name for p in (settings.cases_dir / "kbp-mini").iterdir()) == ["pt-22"]
    assert stored.read_bytes() == before


def test_add_case_checks_before_writing(settings, db, shared_data, tmp_path):
    """The check sits in add_case itself: loaders and the demo get it too."""
    from arena.tasks.case_check import CaseCheckError
    from arena.tasks.store import add_case, upsert_task

    task = upsert_task(db, own_task(tmp_path))
    folder = case_folder(shared_data, tmp_path / "incoming", patients=("pt_22",))
    bad = _bad_label(folder, "pt-22", 9)
    with pytest.raises(CaseCheckError, match=r"label values \[9\]"):
        add_case(db, settings, task, "pt-22", folder / "images" / "pt-22.nii.gz", bad, task.phases)
    assert not (settings.cases_dir / "kbp-mini" / "pt-22").exists()
    # the y-flipped segmentation of the real DICOM series is the same grid stored the other way round:
    # accepted without resampling opt-in (an exact permutation), as abdomen-totalseg needs
    from arena.tasks.case_check import check_case

    rep = check_case("dicom", shared_data / "totalseg" / "example_ct_dicom",
                     shared_data / "totalseg" / "example_seg_dicom.nii.gz", range(1, 256))
    assert rep.reoriented and not rep.resampled


def test_new_phases_start_closed_and_hidden_and_reload_keeps_organizer_edits(settings, db, tmp_path):
    from arena.tasks.store import upsert_task

    d = own_task(tmp_path)
    task = upsert_task(db, d)
    db.commit()
    for p in task.phases:
        assert p.visibility == "hidden" and not p.board_public()
        assert p.accepting() is not None and "closed" in p.accepting()
    val = next(p for p in task.phases if p.slug == "validation")
    val.visibility, val.closes_at = "public", None  # an organizer opens it on the web
    db.commit()
    task = upsert_task(db, d)  # re-load: the organizer's settings stay
    db.commit()
    val = next(p for p in task.phases if p.slug == "validation")
    assert val.visibility == "public" and val.accepting() is None
    # task.yaml may open a phase from the start
    d2 = own_task(tmp_path / "b", slug="kbp-open", phase_extra={"visibility": "public", "opens": "2026-01-01T00:00:00Z",
                                                               "closes": "2099-01-01T00:00:00+02:00"})
    t2 = upsert_task(db, d2)
    for p in t2.phases:
        assert p.visibility == "public" and p.accepting() is None
        assert p.closes_at.isoformat() == "2098-12-31T22:00:00"  # converted to UTC


def test_shipped_tasks_keep_public_open_phases(db):
    from arena.tasks.store import upsert_task

    for slug in ("han-oar-22", "han-oar-9", "thoracic-oar-6", "abdomen-totalseg", "colon-tissue"):
        task = upsert_task(db, REPO / "tasks" / slug)
        assert all(p.visibility == "public" and p.accepting() is None for p in task.phases), slug


def test_task_check_passes_for_cases_from_a_folder(settings, db, shared_data, loaded_task, tmp_path):
    folder = case_folder(shared_data, tmp_path / "incoming", patients=("pt_22", "pt_307"))
    r = cli("task", "check", str(loaded_task))
    assert r.exit_code == 0, r.output
    assert "no synthetic data generator" in r.output and "has no cases yet" in r.output
    assert cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "test").exit_code == 0
    r = cli("task", "check", str(loaded_task))
    assert r.exit_code == 0, r.output
    assert "pt-22 [test]: 128×128×128 voxels" in r.output and "cases in the database per phase: validation 0, test 2" in r.output
    _bad_label(folder, "pt-307", 9)
    r = cli("task", "check", str(loaded_task), "--cases", str(folder))
    assert r.exit_code == 1 and "label values [9]" in r.output


def test_try_samples_are_checked_and_converted_to_mha(shared_data, tmp_path):
    """`arena try`'s samples/<case>/ in .nii.gz reach the container as .mha, as loaded cases do."""
    from arena.runner.harness import sample_cases
    from arena.tasks.case_check import CaseCheckError
    from arena.tasks.spec import load_spec

    d = own_task(tmp_path)
    folder = case_folder(shared_data, tmp_path / "src", patients=("pt_22",))
    (d / "samples" / "pt-22").mkdir(parents=True)
    shutil.copyfile(folder / "images" / "pt-22.nii.gz", d / "samples" / "pt-22" / "image.nii.gz")
    shutil.copyfile(folder / "labels" / "pt-22.nii.gz", d / "samples" / "pt-22" / "reference.nii.gz")
    spec = load_spec(d)
    [case] = sample_cases(d, spec, 2, "small", tmp_path / "scratch")
    assert case.image.suffix == ".mha" and case.reference.suffix == ".mha"
    src = sitk.ReadImage(str(folder / "images" / "pt-22.nii.gz"))
    img = sitk.ReadImage(str(case.image))
    assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src)) and img.GetSpacing() == src.GetSpacing()
    ref_path = d / "samples" / "pt-22" / "reference.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path)))
    arr[0, 0, 0] = 9
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(src)
    sitk.WriteImage(bad, str(ref_path))
    with pytest.raises(CaseCheckError, match=r"reference.nii.gz: label values \[9\]"):
        sample_cases(d, spec, 2, "small", tmp_path / "scratch2")


def test_build_example_mode_follows_the_label_map(tmp_path):
    """`arena images build-example --task` picks the example mode whose label map is the task's."""
    from arena.cli.images import example_mode_for
    from arena.tasks.spec import load_spec

    assert example_mode_for(load_spec(own_task(tmp_path))) == "han-oar-openkbp"  # OpenKBP's labels, own slug
    assert example_mode_for(load_spec(REPO / "tasks" / "han-oar-9")) == "han-oar-9"
    with pytest.raises(ValueError, match="no mode for abdomen-totalseg's label map"):
        example_mode_for(load_spec(REPO / "tasks" / "abdomen-totalseg"))

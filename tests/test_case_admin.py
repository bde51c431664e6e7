"""Listing, moving and removing cases, in the CLI and on the organizer pages; scored cases are protected
(issue 14: a wrongly loaded case could only be undone by wiping ARENA_HOME)."""

from __future__ import annotations

import io
import shutil

import SimpleITK as sitk
from sqlalchemy import func, select
from test_import_cases import case_folder, cli, own_task
from web_helpers import fake_submission, form_post, make_task, make_user, sign_in


def test_cli_list_move_remove(settings, db, shared_data, tmp_path):
    from arena.models import Case, Task

    d = own_task(tmp_path)
    assert cli("task", "load", str(d)).exit_code == 0
    folder = case_folder(shared_data, tmp_path / "incoming", patients=("pt_22", "pt_307"))
    assert cli("task", "import-cases", "kbp-mini", str(folder), "--phase", "validation").exit_code == 0
    r = cli("task", "cases", "kbp-mini")
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("pt-22 "))
    assert "validation" in line and "128×128×128" in line and "3.91×3.91×2.5" in line
    present = db.scalar(select(Case).where(Case.key == "pt-22")).meta["labels_present"]
    assert f"{len(present)}/7" in line
    assert '"case": "pt-307"' in cli("task", "cases", "kbp-mini", "--json").output

    r = cli("task", "move-case", "kbp-mini", "pt-307", "--to", "test")
    assert r.exit_code == 0 and "pt-307 (validation → test)" in r.output
    db.expire_all()
    task = db.scalar(select(Task).where(Task.slug == "kbp-mini"))
    assert {p.slug: [c.key for c in p.cases] for p in task.phases} == {"validation": ["pt-22"], "test": ["pt-307"]}
    assert cli("task", "move-case", "kbp-mini", "pt-307", "--to", "final").exit_code == 2

    stored = settings.cases_dir / "kbp-mini" / "pt-22"
    assert stored.is_dir()
    r = cli("task", "remove-case", "kbp-mini", "pt-22")
    assert r.exit_code == 0, r.output
    db.expire_all()
    assert [c.key for c in db.scalars(select(Case))] == ["pt-307"] and not stored.exists()
    assert (folder / "images" / "pt-22.nii.gz").is_file()  # the organizer's source files are never touched
    assert cli("task", "remove-case", "kbp-mini", "pt-22").exit_code == 2  # no such case any more


def test_scored_cases_need_force(settings, db):
    from arena.models import AuditEvent, Case, CaseResult, MetricValue

    task = make_task(db, settings)
    alice, _ = make_user(db, "alice", team="Team Alice")
    fake_submission(db, settings, task, "validation", alice)
    db.commit()
    r = cli("task", "remove-case", "han-oar-22", "validation-000")
    assert r.exit_code == 2 and "scored by 1 evaluation(s)" in r.output and "--force" in r.output
    r = cli("task", "move-case", "han-oar-22", "validation-000", "--to", "test")
    assert r.exit_code == 2 and "scored by 1 evaluation(s) in validation" in r.output
    db.expire_all()
    assert db.scalar(select(func.count(CaseResult.id))) == 2
    r = cli("task", "remove-case", "han-oar-22", "validation-000", "--force")
    assert r.exit_code == 0 and "1 result(s) deleted" in r.output
    db.expire_all()
    assert db.scalar(select(func.count(CaseResult.id))) == 1  # the other case's result stays
    assert db.scalar(select(func.count(MetricValue.id))) == 4  # 2 labels × 2 metrics of that one result
    assert "validation-000" not in {c.key for c in db.scalars(select(Case))}
    assert db.scalar(select(AuditEvent).where(AuditEvent.action == "task.case_remove")).detail["results_deleted"] == 1
    r = cli("task", "move-case", "han-oar-22", "validation-001", "--to", "test", "--force")
    assert r.exit_code == 0
    db.expire_all()
    assert db.scalar(select(func.count(CaseResult.id))) == 1  # a move keeps the results with their evaluation


def test_web_case_table_move_remove_and_import_problems(app, settings, db, shared_data):
    from arena.models import Case, Task

    task = make_task(db, settings)
    org, _ = make_user(db, "org")
    task.organizers.append(org)
    alice, _ = make_user(db, "alice", team="Team Alice")
    fake_submission(db, settings, task, "validation", alice)
    db.commit()
    c = sign_in(app.test_client(), "org")
    page = c.get("/manage/tasks/han-oar-22").get_data(as_text=True)
    assert 'id="case-table"' in page and "validation-000" in page and "test-001" in page
    assert "teams see per run only its status, one coarse outcome" in page  # the hidden test phase's wording

    # a scored case: refused without "even if scored", the problems box says why
    r = form_post(c, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases/validation-000/remove", {})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="case-errors"' in html and "scored by 1 evaluation(s)" in html
    r = form_post(c, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases/test-000/move", {"to": "validation"})
    assert r.status_code == 302
    r = form_post(c, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases/test-001/remove", {})
    assert r.status_code == 302
    db.expire_all()
    t = db.scalar(select(Task).where(Task.slug == "han-oar-22"))
    assert {p.slug: sorted(x.key for x in p.cases) for p in t.phases} == {
        "validation": ["test-000", "validation-000", "validation-001"], "test": []}
    assert "test-001" not in {x.key for x in db.scalars(select(Case))}

    # an import with one bad case: nothing loaded, the problems box (no "Loaded" banner) names the file
    root = settings.home / "import" / "batch"
    case_folder(shared_data, root, patients=("pt_22",))
    bad = root / "labels" / "pt-22.nii.gz"
    img = sitk.ReadImage(str(bad))
    arr = sitk.GetArrayFromImage(img)
    arr[0, 0, 0] = 40
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(bad))
    shutil.copyfile(shared_data / "openkbp" / "pt_307_ct.nii.gz", root / "images" / "pt-307.nii.gz")
    shutil.copyfile(shared_data / "openkbp" / "pt_307_oars.nii.gz", root / "labels" / "pt-307.nii.gz")
    r = form_post(c, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases",
                  {"folder": str(root), "phases": ["test"]})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="case-errors"' in html and str(bad) in html and "label values [40]" in html
    assert "nothing was loaded" in html and "Loaded " not in html
    db.expire_all()
    assert not {"pt-22", "pt-307"} & {x.key for x in db.scalars(select(Case))}

    # a CSV upload assigns phases per case
    bad.unlink()
    shutil.copyfile(shared_data / "openkbp" / "pt_22_oars.nii.gz", bad)
    csv = b"case,phase\npt-22,validation\npt-307,test\n"
    r = form_post(c, "/manage/tasks/han-oar-22", "/manage/tasks/han-oar-22/cases",
                  {"folder": str(root), "phases_csv": (io.BytesIO(csv), "phases.csv")},
                  content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)[-3000:]
    db.expire_all()
    t = db.scalar(select(Task).where(Task.slug == "han-oar-22"))
    phases = {p.slug: {x.key for x in p.cases} for p in t.phases}
    assert "pt-22" in phases["validation"] and phases["test"] == {"pt-307"}
    page = c.get("/manage/tasks/han-oar-22").get_data(as_text=True)
    assert "Loaded 2 case(s) (1 into test, 1 into validation)" in page


def test_first_admin_signs_in_as_documented(app, settings, db):
    """docs/web.md: `arena user add NAME --admin`, `arena user passwd NAME` (stdin in a script), /signin."""
    from click.testing import CliRunner

    from arena.cli import main

    r = CliRunner().invoke(main, ["user", "add", "chair", "--admin"])
    assert r.exit_code == 0 and r.output.strip().startswith("arena_")
    r = CliRunner().invoke(main, ["user", "passwd", "chair"], input="a long enough passphrase\n")
    assert r.exit_code == 0, r.output
    c = sign_in(app.test_client(), "chair", "a long enough passphrase")
    assert c.get("/manage/users").status_code == 200 and c.get("/manage/").status_code == 200

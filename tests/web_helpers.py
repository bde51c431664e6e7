"""Helpers for the web tests: a task with fake finished submissions (no Docker), signed-in clients."""

from __future__ import annotations

import io
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"


def make_task(db, settings, n_cases: int = 2):
    """han-oar-22 with ``n_cases`` case rows per phase (paths only: nothing here reads the files)."""
    import numpy as np
    import SimpleITK as sitk

    from arena.models import Case
    from arena.tasks.store import upsert_task

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    for phase in task.phases:
        for i in range(n_cases):
            key = f"{phase.slug}-{i:03d}"
            (settings.cases_dir / key).mkdir(parents=True, exist_ok=True)
            for name in ("image", "reference"):
                sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)),
                                str(settings.cases_dir / key / f"{name}.mha"))
            case = Case(task=task, key=key, image_path=str(settings.cases_dir / key / "image.mha"),
                        reference_path=str(settings.cases_dir / key / "reference.mha"), meta={})
            db.add(case)
            phase.cases.append(case)
    db.flush()
    return task


def make_user(db, name: str, team: str | None = None, admin: bool = False):
    from arena.users import create_user

    user, token = create_user(db, name, team=team, is_admin=admin, password=PASSWORD)
    return user, token


def fake_submission(db, settings, task, phase_slug: str, user, dice: float = 0.8, status: str = "succeeded",
                    label: str = "v1", log: str = "secret log line"):
    """A validated submission with one finished evaluation and per-case scores for two labels."""
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import CaseResult, Evaluation, MetricValue, Submission
    from arena.submissions.intake import store_upload

    phase = next(p for p in task.phases if p.slug == phase_slug)
    upload = store_upload(io.BytesIO(b"not really an image " + label.encode()), settings)
    sub = Submission(task=task, phase=phase, team=user.team, user=user, label=label,
                     status=SubmissionStatus.VALIDATED, upload_path=str(upload.path), upload_sha256=upload.sha256,
                     upload_bytes=upload.size, upload_name="image.tar")
    db.add(sub)
    ev = Evaluation(submission=sub, status=EvaluationStatus(status), cases_total=len(phase.cases),
                    cases_done=len(phase.cases) if status == "succeeded" else 0, worker="test-worker")
    db.add(ev)
    if status == "succeeded":
        for case in phase.cases:
            cr = CaseResult(evaluation=ev, case=case, status=CaseStatus.SUCCEEDED, runtime_s=1.5, log_tail=log,
                            exit_code=0, peak_memory_mb=90.0)
            cr.metrics = [MetricValue(label=lab, metric=m, value=v) for lab in (1, 2)
                          for m, v in (("dice", dice), ("hd95", 3.0))]
            db.add(cr)
    db.flush()
    return sub


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def sign_in(client, name: str, password: str = PASSWORD):
    page = client.get("/signin").get_data(as_text=True)
    r = client.post("/signin", data={"name": name, "password": password, "csrf_token": csrf_of(page)})
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    return client


def form_post(client, page_path: str, post_path: str, data: dict, **kw):
    """POST a form the way a browser does: the CSRF token from ``page_path``."""
    token = csrf_of(client.get(page_path).get_data(as_text=True))
    return client.post(post_path, data={**data, "csrf_token": token}, **kw)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}

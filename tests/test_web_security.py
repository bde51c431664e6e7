"""Web and account protections from the security audit (issue 17, findings 3–9, 11, 12), each tried
through the real path: the Flask test client, a threaded werkzeug server on 127.0.0.1, the ``arena``
command. docs/security.md says which test proves which promise."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from web_helpers import PASSWORD, bearer, csrf_of, fake_submission, form_post, make_task, make_user, sign_in

TEMPLATES = Path(__file__).resolve().parents[1] / "arena" / "web" / "templates"
HOSTILE_TEAM = "x'+alert(document.domain)+'"


@pytest.fixture
def world(settings, db):
    task = make_task(db, settings)
    alice, alice_token = make_user(db, "alice", team="Team Alice")
    bob, bob_token = make_user(db, "bob", team="Team Bob")
    admin, admin_token = make_user(db, "root", admin=True)
    sub_a = fake_submission(db, settings, task, "validation", alice, dice=0.8, label="alice-v1")
    sub_b = fake_submission(db, settings, task, "validation", bob, dice=0.6, label="bob-v1")
    db.commit()
    return {"task": task, "alice": alice_token, "bob": bob_token, "admin": admin_token, "sub_a": sub_a.id,
            "sub_b": sub_b.id}


class _Scripts(HTMLParser):
    """Collects what could run script in an HTML page: on* attributes, javascript: URLs, <script> bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[tuple[str, str]] = []
        self.js_urls: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.bodies: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            self.attrs.append((tag, k, v))
            if k.startswith("on"):
                self.handlers.append((tag, k))
            if v and v.strip().lower().startswith("javascript:"):
                self.js_urls.append(v)
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.bodies.append(data)


def _scan(html: str) -> _Scripts:
    p = _Scripts()
    p.feed(html)
    return p


def _script_src(policy: str) -> list[str]:
    """The sources a Content-Security-Policy allows for scripts (script-src, else default-src)."""
    directives = {d.split()[0]: d.split()[1:] for d in (x.strip() for x in policy.split(";")) if d}
    return directives.get("script-src", directives.get("default-src", ["*"]))


# -- finding 3: stored XSS, inline JavaScript ---------------------------------------------------------------
INLINE_HANDLER = re.compile(r"""\son[a-z]{3,}\s*=\s*["'{]""", re.I)
INLINE_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.I | re.S)


@pytest.mark.parametrize("template", sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.html")))
def test_templates_carry_no_inline_javascript(template):
    """Every template: no on* handler, no javascript: URL, no <script> with a body or without src."""
    src = (TEMPLATES / template).read_text()
    assert not INLINE_HANDLER.findall(src), f"{template}: inline event handler"
    assert "javascript:" not in src.lower(), f"{template}: javascript: URL"
    for m in INLINE_SCRIPT.finditer(src):
        assert "src=" in m.group("attrs") and not m.group("body").strip(), f"{template}: inline <script>"


def test_hostile_team_name_is_inert(app, db, world):
    """A team named ``x'+alert(document.domain)+'``: its member's account page (the "Leave team" button)
    and the board carry it as data only, and the policy runs no inline script anyway."""
    c = app.test_client()
    page = c.get("/signup").get_data(as_text=True)
    c.post("/signup", data={"name": "mallory", "password": PASSWORD, "password2": PASSWORD,
                            "csrf_token": csrf_of(page)})
    r = form_post(c, "/account", "/account/team", {"action": "create", "name": HOSTILE_TEAM})
    assert r.status_code == 302
    for path in ("/account", "/tasks/han-oar-22?phase=validation", "/"):
        r = c.get(path)
        assert r.status_code == 200
        found = _scan(r.get_data(as_text=True))
        assert found.handlers == [] and found.js_urls == [] and found.bodies == [], path
        assert all((s.get("src") or "").startswith("/static/") for s in found.scripts), path
        allowed = _script_src(r.headers["Content-Security-Policy"])
        assert allowed == ["'self'"], allowed  # no 'unsafe-inline', no 'unsafe-eval', no other host
    account = _scan(c.get("/account").get_data(as_text=True))
    confirm = [v for tag, k, v in account.attrs if tag == "form" and k == "data-confirm"]
    assert confirm == [f"Leave {HOSTILE_TEAM}?"]  # the browser gets the name back as text for confirm()


# -- finding 8: Content-Security-Policy on all, no-store on pages and API answers ---------------------------------
def test_every_answer_has_csp_and_dynamic_ones_are_not_stored(app, world):
    alice = sign_in(app.test_client(), "alice")
    anon = app.test_client()
    answers = {
        "signed-in page": alice.get("/account"),
        "submission page": alice.get(f"/submissions/{world['sub_a']}"),
        "API with the session": alice.get("/api/v1/me"),
        "API with a token": anon.get("/api/v1/me", headers=bearer(world["alice"])),
        "results CSV": anon.get(f"/api/v1/submissions/{world['sub_a']}/results?format=csv",
                                headers=bearer(world["alice"])),
        "board CSV": anon.get("/tasks/han-oar-22/leaderboard.csv?phase=validation"),
        "sign-in form": anon.get("/signin"),
        "error page": alice.get("/submissions/999999"),
        "API error": anon.get("/api/v1/me"),
    }
    for what, r in answers.items():
        assert r.status_code in (200, 401, 404), what
        assert _script_src(r.headers.get("Content-Security-Policy", "")) == ["'self'"], what
        assert "no-store" in r.headers.get("Cache-Control", ""), what
    static = anon.get("/static/arena.js")
    assert static.status_code == 200 and "Content-Security-Policy" in static.headers
    static.close()


# -- finding 6: CSV formula injection ----------------------------------------------------------------------
FORMULA_TEAM = '=HYPERLINK("http://x","y")'
FORMULA_LABEL = "@SUM(1)"


def _csv_cells(text: str) -> list[str]:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) > 1, text[:300]
    return [cell for row in rows[1:] for cell in row]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_csv_files_never_start_a_formula(app, settings, db, world, tmp_path, monkeypatch):
    """A team ``=HYPERLINK(...)`` with the label ``@SUM(1)`` and a negative score: in the board CSV, the
    organizer's submissions/evaluations/results exports, the API's results CSV, ``arena results --csv`` and
    a backup's board snapshot, no text cell starts with = + - @ tab or CR; the negative number stays one."""
    import tarfile

    from click.testing import CliRunner
    from sqlalchemy import select

    from arena.backup import export_task
    from arena.cli import main
    from arena.models import MetricValue, Task

    evil, evil_token = make_user(db, "eve", team=FORMULA_TEAM)
    task = db.scalar(select(Task).where(Task.slug == "han-oar-22"))
    sub = fake_submission(db, settings, task, "validation", evil, dice=0.7, label=FORMULA_LABEL)
    first = sub.evaluations[0].case_results[0]
    next(mv for mv in first.metrics if mv.metric == "hd95").value = -0.25  # a number, not text
    db.commit()
    admin = sign_in(app.test_client(), "root")
    files = {"board": app.test_client().get("/tasks/han-oar-22/leaderboard.csv?phase=validation"),
             "API results": app.test_client().get(f"/api/v1/submissions/{sub.id}/results?format=csv",
                                                  headers=bearer(evil_token))}
    for kind in ("submissions", "evaluations", "results"):
        files[f"export {kind}"] = admin.get(f"/manage/tasks/han-oar-22/export/{kind}.csv")
    assert {k: r.status_code for k, r in files.items()} == {k: 200 for k in files}
    texts = {k: r.get_data(as_text=True) for k, r in files.items()}
    monkeypatch.delenv("ARENA_TOKEN", raising=False)
    monkeypatch.delenv("ARENA_SERVER", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no `arena login` config: the CLI reads the database
    out = CliRunner().invoke(main, ["results", str(sub.id), "--csv"])
    assert out.exit_code == 0, out.output
    texts["arena results --csv"] = out.output
    export_task(settings, "han-oar-22", tmp_path / "backup.tar.gz")
    with tarfile.open(tmp_path / "backup.tar.gz") as tar:
        texts["backup board"] = tar.extractfile("boards/validation.csv").read().decode()
    for what, text in texts.items():
        cells = _csv_cells(text)
        assert any(FORMULA_TEAM in c for c in cells) or any(FORMULA_LABEL in c for c in cells), what
        dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(c)]
        assert dangerous == [], (what, dangerous)
        if what in ("API results", "export results", "arena results --csv"):
            assert "-0.25" in cells, what

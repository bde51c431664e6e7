"""Web and account protections from the security audit (issue 17, findings 3–9, 11, 12), each tried
through the real path: the Flask test client, a threaded werkzeug server on 127.0.0.1, the ``arena``
command. docs/security.md says which test proves which promise."""

from __future__ import annotations

import html
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


def _scan(page: str) -> _Scripts:
    p = _Scripts()
    p.feed(page)
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


def test_hostile_team_name_is_inert(app, settings, db, world):
    """A team named ``x'+alert(document.domain)+'``: its member's account page (the "Leave team" button)
    and the board carry it as data only, and the policy runs no inline script anyway."""
    c = app.test_client()
    page = c.get("/signup").get_data(as_text=True)
    c.post("/signup", data={"name": "mallory", "password": PASSWORD, "password2": PASSWORD,
                            "csrf_token": csrf_of(page)})
    r = form_post(c, "/account", "/account/team", {"action": "create", "name": HOSTILE_TEAM})
    assert r.status_code == 302
    from sqlalchemy import select

    from arena.models import Task, User

    mallory = db.scalar(select(User).where(User.name == "mallory"))
    sub = fake_submission(db, settings, db.scalar(select(Task)), "validation", mallory, label=HOSTILE_TEAM)
    db.commit()
    for path in ("/account", "/tasks/han-oar-22?phase=validation", "/", f"/submissions/{sub.id}",
                 "/tasks/han-oar-22/compare?phase=validation"):
        r = c.get(path)
        assert r.status_code == 200
        assert HOSTILE_TEAM in html.unescape(r.get_data(as_text=True)) or path == "/", path
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
    from arena.models import Task

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


# -- finding 4: sign-out, password change and disabling end sessions on the server ----------------------------
def _signed_in_with_remember(app, name: str):
    """A client signed in with "keep me signed in"; returns it and its (session, remember) cookie values."""
    c = app.test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    r = c.post("/signin", data={"name": name, "password": PASSWORD, "remember": "1", "csrf_token": token})
    assert r.status_code == 302
    return c, c.get_cookie("arena_session").value, c.get_cookie("remember_token").value


def _opens(app, cookies: dict[str, str]) -> dict[str, int]:
    """Status of /account and /api/v1/me for a fresh client holding only ``cookies`` (a thief's copy)."""
    thief = app.test_client()
    for k, v in cookies.items():
        thief.set_cookie(k, v)
    return {"/account": thief.get("/account").status_code, "/api/v1/me": thief.get("/api/v1/me").status_code}


SIGNED_IN = {"/account": 200, "/api/v1/me": 200}
SIGNED_OUT = {"/account": 302, "/api/v1/me": 401}


def test_signout_ends_copied_session_and_remember_cookies(app, world):
    c, session_cookie, remember = _signed_in_with_remember(app, "alice")
    assert _opens(app, {"arena_session": session_cookie}) == SIGNED_IN
    assert _opens(app, {"remember_token": remember}) == SIGNED_IN
    other_browser, other_session, other_remember = _signed_in_with_remember(app, "alice")
    assert form_post(c, "/account", "/signout", {}).status_code == 302
    for copied in ({"arena_session": session_cookie}, {"remember_token": remember},
                   {"arena_session": session_cookie, "remember_token": remember},
                   {"arena_session": other_session}, {"remember_token": other_remember}):
        assert _opens(app, copied) == SIGNED_OUT, copied
    assert other_browser.get("/account").status_code == 302  # signing out signs out every browser
    assert app.test_client().get("/api/v1/me", headers=bearer(world["alice"])).status_code == 200  # tokens stay
    assert _signed_in_with_remember(app, "alice")[0].get("/account").status_code == 200  # and she can come back


def test_remember_cookie_lasts_the_configured_days(world, monkeypatch):
    import datetime as dt
    from email.utils import parsedate_to_datetime

    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_REMEMBER_DAYS", "2")
    c = create_app(load_settings()).test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    r = c.post("/signin", data={"name": "alice", "password": PASSWORD, "remember": "1", "csrf_token": token})
    cookie = next(v for v in r.headers.getlist("Set-Cookie") if v.startswith("remember_token="))
    expires = parsedate_to_datetime(re.search(r"Expires=([^;]+)", cookie).group(1))
    left = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=1, hours=23) < left <= dt.timedelta(days=2)


def test_password_change_ends_other_sessions_but_not_this_one(app, world):
    c, _, _ = _signed_in_with_remember(app, "alice")
    other, other_session, other_remember = _signed_in_with_remember(app, "alice")
    new = "a much better passphrase"
    r = form_post(c, "/account/password", "/account/password",
                  {"current": "wrong password!", "password": new, "password2": new})
    assert r.status_code == 400 and other.get("/account").status_code == 200  # nothing changed
    r = form_post(c, "/account/password", "/account/password", {"current": PASSWORD, "password": new, "password2": new})
    assert r.status_code == 302
    assert c.get("/account").status_code == 200 and c.get("/api/v1/me").status_code == 200
    assert other.get("/account").status_code == 302
    assert _opens(app, {"remember_token": other_remember}) == SIGNED_OUT
    assert _opens(app, {"arena_session": other_session}) == SIGNED_OUT
    fresh = app.test_client()
    token = csrf_of(fresh.get("/signin").get_data(as_text=True))
    assert fresh.post("/signin", data={"name": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 401
    assert sign_in(app.test_client(), "alice", new).get("/account").status_code == 200


def test_admin_disable_ends_sessions_tokens_and_sign_in(app, world):
    bob, bob_session, bob_remember = _signed_in_with_remember(app, "bob")
    admin = sign_in(app.test_client(), "root")
    page = admin.get("/manage/users")
    assert page.status_code == 200
    bob_id = _user_id(app, "bob")
    r = form_post(admin, "/manage/users", f"/manage/users/{bob_id}", {"action": "disable"})
    assert r.status_code == 302
    assert bob.get("/account").status_code == 302
    assert _opens(app, {"remember_token": bob_remember}) == SIGNED_OUT
    assert _opens(app, {"arena_session": bob_session}) == SIGNED_OUT
    assert app.test_client().get("/api/v1/me", headers=bearer(world["bob"])).status_code == 401
    fresh = app.test_client()
    token = csrf_of(fresh.get("/signin").get_data(as_text=True))
    r = fresh.post("/signin", data={"name": "bob", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403 and "disabled" in r.get_data(as_text=True)
    form_post(admin, "/manage/users", f"/manage/users/{bob_id}", {"action": "enable"})
    assert sign_in(app.test_client(), "bob").get("/account").status_code == 200
    assert app.test_client().get("/api/v1/me", headers=bearer(world["bob"])).status_code == 200
    # only administrators manage users
    alice = sign_in(app.test_client(), "alice")
    assert alice.get("/manage/users").status_code == 403
    r = alice.post(f"/manage/users/{bob_id}", data={"action": "disable", "csrf_token": csrf_of(
        alice.get("/account").get_data(as_text=True))})
    assert r.status_code == 403


def _user_id(app, name: str) -> int:
    from sqlalchemy import select

    from arena.db import session_factory
    from arena.models import User

    with session_factory(app.config["ARENA"].database_url)() as s:
        return s.scalar(select(User.id).where(User.name == name))


# -- finding 7: sign-in limits, counted atomically, per account and per address -----------------------------
@pytest.fixture
def behind_proxy(settings, world, monkeypatch):
    """A threaded werkzeug server on 127.0.0.1 configured for one trusted proxy (ARENA_PROXY_HOPS=1), so a
    request says its client address in X-Forwarded-For as a proxy would; yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_PROXY_HOPS", "1")
    srv = make_server("127.0.0.1", 0, create_app(load_settings()), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def _http_sign_in(base: str, name: str, password: str, address: str):
    """A browser at ``address``: fetch the form (session cookie + CSRF token); returns a function that
    posts the sign-in and gives its status."""
    import requests

    s = requests.Session()
    s.headers["X-Forwarded-For"] = address
    token = csrf_of(s.get(f"{base}/signin").text)

    def post() -> int:
        return s.post(f"{base}/signin", data={"name": name, "password": password, "csrf_token": token},
                      allow_redirects=False).status_code

    return post


def test_parallel_wrong_passwords_count_atomically_and_lock_only_that_pair(behind_proxy, settings, db):
    """40 wrong passwords for alice at once from one address: exactly ARENA_SIGNIN_RATE (10) are tried
    and answered 401, the rest 429. Then from that address alice is locked out, bob is not; alice from
    another address signs in."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from sqlalchemy import func, select

    from arena.models import AuditEvent

    limit = settings.signin_rate
    attacker = "203.0.113.7"
    posts = [_http_sign_in(behind_proxy, "alice", f"guess-{i:04d}-wrong", attacker) for i in range(40)]
    barrier = Barrier(len(posts))

    def go(post):
        barrier.wait()
        return post()

    with ThreadPoolExecutor(len(posts)) as pool:
        codes = list(pool.map(go, posts))
    assert sorted(set(codes)) == [401, 429] and codes.count(401) == limit, codes
    db.expire_all()
    tried = db.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "user.signin_failed"))
    assert tried == limit
    assert _http_sign_in(behind_proxy, "alice", PASSWORD, attacker)() == 429
    assert _http_sign_in(behind_proxy, "bob", PASSWORD, attacker)() == 302
    assert _http_sign_in(behind_proxy, "alice", PASSWORD, "198.51.100.2")() == 302


def test_one_address_cannot_spray_accounts_nor_lock_an_account_alone(world, monkeypatch):
    """Per address, all accounts: after ARENA_SIGNIN_ADDRESS_RATE failures the address gets 429 for every
    name. Per account, all addresses: one address adds at most ARENA_SIGNIN_RATE to it."""
    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_SIGNIN_RATE", "2")
    monkeypatch.setenv("ARENA_SIGNIN_ADDRESS_RATE", "5")
    monkeypatch.setenv("ARENA_SIGNIN_ACCOUNT_RATE", "4")
    monkeypatch.setenv("ARENA_PROXY_HOPS", "1")
    app = create_app(load_settings())

    def attempt(name: str, password: str, address: str) -> int:
        c = app.test_client()
        h = {"X-Forwarded-For": address}
        token = csrf_of(c.get("/signin", headers=h).get_data(as_text=True))
        return c.post("/signin", data={"name": name, "password": password, "csrf_token": token},
                      headers=h).status_code

    sprayer = [attempt(f"user{i}", "wrong password", "192.0.2.1") for i in range(7)]
    assert sprayer == [401] * 5 + [429] * 2
    assert attempt("bob", PASSWORD, "192.0.2.1") == 429  # that address is done for 15 minutes
    assert attempt("bob", PASSWORD, "192.0.2.2") == 302
    # alice: one address hammering her counts 2 toward her account's 4, however often it tries
    assert [attempt("alice", "wrong password", "192.0.2.3") for _ in range(6)] == [401, 401] + [429] * 4
    assert attempt("alice", PASSWORD, "192.0.2.4") == 302
    # only a second address reaches her account limit: then she waits too (documented trade-off)
    assert [attempt("alice", "wrong password", "192.0.2.5") for _ in range(3)] == [401, 401, 429]
    assert attempt("alice", PASSWORD, "192.0.2.6") == 429


def test_forwarded_for_is_ignored_without_a_trusted_proxy(world, monkeypatch):
    """By default (ARENA_PROXY_HOPS=0) a client cannot dodge the limit by inventing X-Forwarded-For."""
    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_SIGNIN_RATE", "3")
    c = create_app(load_settings()).test_client()
    token = csrf_of(c.get("/signin").get_data(as_text=True))
    codes = [c.post("/signin", data={"name": "alice", "password": "wrong password", "csrf_token": token},
                    headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


# -- finding 9: sign-up limit per address ----------------------------------------------------------------------
def test_signup_is_rate_limited_per_address(world, monkeypatch):
    """Probing names on the sign-up form (it says when a name is taken) counts like signing up: after
    ARENA_SIGNUP_RATE attempts an address gets 429 for an hour; another address can still sign up."""
    from arena.config import load_settings
    from arena.web import create_app

    monkeypatch.setenv("ARENA_SIGNUP_RATE", "3")
    monkeypatch.setenv("ARENA_PROXY_HOPS", "1")
    app = create_app(load_settings())

    def signup(name: str, address: str):
        c = app.test_client()
        h = {"X-Forwarded-For": address}
        token = csrf_of(c.get("/signup", headers=h).get_data(as_text=True))
        return c.post("/signup", data={"name": name, "password": PASSWORD, "password2": PASSWORD,
                                       "csrf_token": token}, headers=h)

    probes = [signup(name, "192.0.2.9") for name in ("alice", "bob", "carol", "root", "nobody-yet")]
    assert [r.status_code for r in probes] == [400, 400, 302, 429, 429]

    def masked(r, name: str) -> str:  # the answer with the name and the CSRF token taken out
        return re.sub(r'name="csrf_token" value="[^"]+"', "", r.get_data(as_text=True)).replace(name, "NAME")

    assert masked(probes[3], "root") == masked(probes[4], "nobody-yet")  # a refused probe learns nothing
    assert signup("dave", "192.0.2.10").status_code == 302


# -- finding 12: passwords for CLI-made users, an administrator's reset -------------------------------------
def _arena(arena_env, *args: str, **kw):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "arena.cli", *args], env={**os.environ, **arena_env},
                          capture_output=True, text=True, timeout=120, **kw)


def test_user_passwd_prompts_twice_hidden_at_a_terminal(settings, arena_env, world, app):
    """``arena user passwd root`` at a terminal (a pty): asked twice, nothing echoed, a mismatch asked
    again; then the CLI-made admin signs in to /manage; their earlier sessions have ended."""
    import os
    import sys

    import pexpect

    earlier, _, _ = _signed_in_with_remember(app, "root")
    new = "admin passphrase 2026"
    child = pexpect.spawn(sys.executable, ["-m", "arena.cli", "user", "passwd", "root"],
                          env={**os.environ, **arena_env}, encoding="utf-8", timeout=60)
    transcript = []
    for answer in (new, "something else entirely", new, new):
        child.expect(r"(New password for root|Repeat for confirmation): ")
        transcript.append(child.before + child.after)
        child.sendline(answer)
    child.expect(pexpect.EOF)
    transcript.append(child.before)
    child.close()
    assert child.exitstatus == 0, transcript
    output = "".join(transcript)
    assert new not in output and "something else" not in output  # hidden: nothing echoed
    assert "do not match" in output.lower()
    assert earlier.get("/account").status_code == 302
    admin = sign_in(app.test_client(), "root", new)
    assert admin.get("/manage/users").status_code == 200


def test_user_passwd_reads_stdin_for_scripts(settings, arena_env, world, app):
    r = _arena(arena_env, "user", "passwd", "bob", input="scripted passphrase\n")
    assert r.returncode == 0, r.stderr
    assert sign_in(app.test_client(), "bob", "scripted passphrase").get("/account").status_code == 200
    short = _arena(arena_env, "user", "passwd", "bob", input="short\n")
    assert short.returncode != 0 and "at least" in short.stderr
    assert _arena(arena_env, "user", "passwd", "nobody", input="long enough password\n").returncode != 0
    assert sign_in(app.test_client(), "bob", "scripted passphrase").get("/account").status_code == 200
    # never on the command line: the command takes no password argument or option
    assert _arena(arena_env, "user", "passwd", "bob", "scripted passphrase").returncode != 0


def test_admin_reset_gives_a_one_time_password_that_only_sets_a_new_one(app, db, world):
    """An administrator resets alice: a one-time password shown once; alice's sessions end and her old
    password stops; signed in with it she can only choose her own; it works once, and not after it expires."""
    import datetime as dt

    from sqlalchemy import select

    from arena.models import User

    alice, _, _ = _signed_in_with_remember(app, "alice")
    admin = sign_in(app.test_client(), "root")
    r = form_post(admin, "/manage/users", f"/manage/users/{_user_id(app, 'alice')}", {"action": "reset"})
    assert r.status_code == 200
    one_time = re.search(r'id="one-time-password".*?<code class="token">([^<]+)</code>', r.get_data(as_text=True),
                         re.S).group(1)
    assert one_time not in admin.get("/manage/users").get_data(as_text=True)  # shown once
    assert alice.get("/account").status_code == 302
    fresh = app.test_client()
    token = csrf_of(fresh.get("/signin").get_data(as_text=True))
    assert fresh.post("/signin", data={"name": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 401
    otp = sign_in(app.test_client(), "alice", one_time)
    for path in ("/account", "/tasks/han-oar-22", f"/submissions/{world['sub_a']}", "/api/v1/me"):
        r = otp.get(path)
        assert r.status_code == 302 and r.headers["Location"].endswith("/account/password"), path
    mine = "alice's own new passphrase"
    r = form_post(otp, "/account/password", "/account/password",
                  {"current": one_time, "password": mine, "password2": mine})
    assert r.status_code == 302 and otp.get("/account").status_code == 200
    fresh = app.test_client()
    token = csrf_of(fresh.get("/signin").get_data(as_text=True))
    assert fresh.post("/signin", data={"name": "alice", "password": one_time, "csrf_token": token}).status_code == 401
    # an expired one-time password does not sign in
    r = form_post(admin, "/manage/users", f"/manage/users/{_user_id(app, 'bob')}", {"action": "reset"})
    bob_once = re.search(r'<code class="token">([^<]+)</code>', r.get_data(as_text=True)).group(1)
    db.expire_all()
    db.scalar(select(User).where(User.name == "bob")).password_expires_at = dt.datetime(2000, 1, 1)
    db.commit()
    token = csrf_of(fresh.get("/signin").get_data(as_text=True))
    assert fresh.post("/signin", data={"name": "bob", "password": bob_once, "csrf_token": token}).status_code == 401


# -- finding 11: an upload sent as a form gets an answer that says so -------------------------------------------
def test_upload_sent_as_a_form_is_refused_with_what_to_send(app, settings, world):
    """A multipart form (curl -F, a plain HTML form) to the browser's upload URL or the API, or an
    urlencoded body to the browser's URL: 415 naming what was sent and what to send, nothing stored, no
    quota or upload allowance used. curl --data-binary's default type still reaches the API's checks."""
    import io

    alice = sign_in(app.test_client(), "alice")
    token = csrf_of(alice.get("/tasks/han-oar-22/submit?phase=validation").get_data(as_text=True))
    page_url = "/tasks/han-oar-22/phases/validation/upload?label=x&filename=img.tar"
    api_url = "/api/v1/tasks/han-oar-22/phases/validation/submissions"
    before = sorted(p.name for p in settings.uploads_dir.iterdir())
    answers = [
        alice.post(page_url, data={"csrf_token": token, "file": (io.BytesIO(b"x" * 5000), "image.tar.gz")},
                   content_type="multipart/form-data"),
        alice.post(page_url, data={"file": (io.BytesIO(b"x" * 5000), "image.tar.gz")},
                   content_type="multipart/form-data", headers={"X-CSRFToken": token}),
        alice.post(page_url, data=b"x" * 5000, headers={"X-CSRFToken": token,
                                                        "Content-Type": "application/x-www-form-urlencoded"}),
        app.test_client().post(api_url, data={"file": (io.BytesIO(b"x" * 5000), "image.tar.gz")},
                               content_type="multipart/form-data", headers=bearer(world["alice"])),
    ]
    for r in answers:
        sent = r.request.headers["Content-Type"].split(";")[0]
        assert r.status_code == 415, r.get_json()
        assert sent in r.get_json()["error"] and "application/octet-stream" in r.get_json()["error"]
    assert sorted(p.name for p in settings.uploads_dir.iterdir()) == before
    quota = alice.get("/api/v1/tasks/han-oar-22").get_json()["phases"]
    assert next(p for p in quota if p["slug"] == "validation")["quota_left"] > 0
    from sqlalchemy import select

    from arena.db import session_factory
    from arena.models import RateCounter

    with session_factory(settings.database_url)() as s:
        assert s.scalar(select(RateCounter.n).where(RateCounter.key.like("upload:%"))) is None
    r = app.test_client().post(api_url, data=b"not an archive" * 100, headers={
        **bearer(world["alice"]), "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "empty" not in r.get_json()["error"]  # the archive check read the body


# -- finding 5: "$...$" in a team name or label is text, not matplotlib math --------------------------------------
MATH_TEAM = "$\\sqrt{$"
MATH_LABEL = "$x$ net"


def test_dollar_signs_in_names_are_drawn_as_text(app, settings, db, world):
    """A team ``$\\sqrt{$`` (unbalanced math) and a label ``$x$ net``: the rank plot, the distributions page
    and its plot, and the compare page answer 200 with the names drawn literally (no math parsed)."""
    from sqlalchemy import select

    from arena.models import Task

    task = db.scalar(select(Task).where(Task.slug == "han-oar-22"))
    mathy, _ = make_user(db, "mathy", team=MATH_TEAM)
    fake_submission(db, settings, task, "validation", mathy, dice=0.9, label=MATH_LABEL)
    db.commit()
    c = app.test_client()
    base = "/tasks/han-oar-22"
    rank = c.get(f"{base}/rank-distribution.svg?phase=validation")
    dist_page = c.get(f"{base}/distributions?phase=validation")
    compare = c.get(f"{base}/compare?phase=validation")
    assert (rank.status_code, dist_page.status_code, compare.status_code) == (200, 200, 200)
    src = html.unescape(re.search(r'href="([^"]*distributions\.svg[^"]*)"', dist_page.get_data(as_text=True)).group(1))
    dist = c.get(src)
    assert dist.status_code == 200 and dist.mimetype == "image/svg+xml"
    for what, r, shown in (("rank plot", rank, MATH_TEAM), ("distributions plot", dist, f"{MATH_TEAM} — {MATH_LABEL}"),
                           ("compare", compare, f"{MATH_TEAM} — {MATH_LABEL}")):
        assert shown in html.unescape(r.get_data(as_text=True)), what  # the characters typed (SVG keeps text)

"""Site workers (issue 18): a worker at the data owner's site, holding the hidden cases itself and talking
to Arena only over HTTP with a scoped worker token.

The real thing on one machine: `arena serve` (gunicorn) listens on the root-side address of a veth pair;
`arena site-worker` runs in a network namespace of its own (runner_helpers.Link) with its own ARENA_HOME
holding the site's cases, no database or Redis settings, and a firewall in the namespace that lets it
reach only the server's HTTP port; a local `arena worker` beside it serves another (local) phase through
Redis and the database as usual. Both drive this machine's Docker Engine (its unix socket is not
namespaced), as each host would drive its own.

The site's case files carry a marker in their headers, so a byte scan of the server's ARENA_HOME finds
any copy of them; their sha256 sums find a byte-identical copy.

Not isolated: the filesystem. The site worker shares the machine's mount namespace (its engine must see
the /output tmpfs it mounts, as on a real host), so it could read the server's ARENA_HOME (and a SQLite
database there) if it tried; it is given no path to it and no database or Redis setting, and the test
checks its environment. The acceptance test also runs on a private PostgreSQL (listening on 127.0.0.1),
which the namespace must not reach either, like Redis.

The protocol test (replayed and out-of-scope reports) runs in-process against the Flask app.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import func, select

from arena.db import session_factory, upgrade
from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
from runner_helpers import (
    PrivatePostgres,
    build_tiny_image,
    case_counts,
    free_port,
    make_link,
    postgres_unavailable,
    save_image,
    tiny_images_available,
)
from site_helpers import (
    Proc,
    Server,
    arena_cli,
    clean_env,
    firewall_namespace,
    issue_site_token,
    participant_answers,
    probe_ports,
    scan_store,
    site_worker,
    upload,
    write_site_cases,
)

REPO = Path(__file__).resolve().parents[1]
TASK = "han-oar-22"
SITE_PHASE, LOCAL_PHASE = "test", "validation"
SITE = "hosp"
slow_docker = [pytest.mark.docker, pytest.mark.slow]


def _site_ready(worker: bool = True) -> str | None:
    """Why the site-worker parts are missing (the server side; with ``worker`` the site worker too), or None."""
    import importlib.util

    needed = ["arena.site.protocol", "arena.site.server", "arena.web.site_api", "arena.cli.site"]
    for module in needed + (["arena.site.worker"] if worker else []):
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            return f"site workers not built yet: no module {module}"
    return None


def _local_jobs(log: str) -> set[int]:
    """Evaluations a local worker ran, from its log (arena.runner logs each case it starts)."""
    import re

    return {int(m) for m in re.findall(r"evaluation (\d+): case \d+/\d+", log)}


@dataclass
class World:
    """One server, one local worker, one site with its cases, and the participants' API tokens."""

    tmp: Path
    settings: object
    db: object
    env: dict  # the server's (and local worker's, and organizer CLI's) environment
    link: object
    server: Server
    site_home: Path
    keys: list[str]
    local_keys: list[str]
    sums: dict[str, dict[str, str]]
    marker: str
    token: str
    queue: str
    api_tokens: list[str]
    procs: list[Proc] = field(default_factory=list)
    n_site_workers: int = 0

    @property
    def site_url(self) -> str:
        return self.server.url

    def start_site_worker(self, name: str | None = None, token: str | None = None) -> Proc:
        self.n_site_workers += 1
        name = name or f"w{self.n_site_workers}"
        p = site_worker(self.link.enter, self.server.url, token or self.token, self.site_home, name,
                        self.tmp / f"site-worker-{name}.log", self.queue)
        self.procs.append(p)
        return p

    def phase_case_count(self, phase: str) -> int:
        from arena.models import Task

        self.db.expire_all()
        task = self.db.scalar(select(Task).where(Task.slug == TASK))
        return len(next(p for p in task.phases if p.slug == phase).cases)

    def wait_registered(self, worker: Proc, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while self.phase_case_count(SITE_PHASE) < len(self.keys):
            assert worker.alive(), worker.text()[-3000:]
            assert time.monotonic() < deadline, f"the site's cases were never registered:\n{worker.text()[-3000:]}"
            time.sleep(0.5)

    def tarball(self, kind: str, n: int, slow_s: float) -> Path:
        """A distinct tiny image (Arena refuses the same image twice), saved as a participant uploads it."""
        tag = build_tiny_image(kind, variant=f"site-{uuid.uuid4().hex[:8]}", env={"SLOW_S": f"{slow_s:g}"})
        return save_image(tag, self.tmp / f"upload-{n}.tar")

    def submit(self, team: int, phase: str, slow_s: float = 0.5) -> int:
        return upload(self.server.url, self.api_tokens[team], TASK, phase, self.tarball("slow", team, slow_s),
                      f"team{team}-{phase}")

    def evaluations_of(self, sub_id: int, timeout_s: float = 300) -> list:
        """The submission's evaluations once it has one (after intake on the local worker)."""
        from arena.models import Submission

        deadline = time.monotonic() + timeout_s
        while True:
            self.db.expire_all()
            sub = self.db.get(Submission, sub_id)
            if sub.status == SubmissionStatus.FAILED:
                raise AssertionError(f"submission {sub_id} failed intake: {sub.error}")
            if sub.evaluations:
                return list(sub.evaluations)
            assert time.monotonic() < deadline, f"submission {sub_id} never got an evaluation ({sub.status})"
            time.sleep(0.5)

    def wait(self, pred, what: str, timeout_s: float = 300, watch: Proc | None = None):
        deadline = time.monotonic() + timeout_s
        while True:
            self.db.expire_all()
            got = pred()
            if got:
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
                f"\n{watch.text()[-3000:]}" if watch else "")
            time.sleep(0.3)

    def evaluation(self, ev_id: int):
        from arena.models import Evaluation

        self.db.expire_all()
        return self.db.get(Evaluation, ev_id)

    def wait_finished(self, ev_id: int, timeout_s: float = 300, watch: Proc | None = None):
        return self.wait(lambda: (e := self.evaluation(ev_id)).status.finished and e, f"evaluation {ev_id} to finish",
                         timeout_s, watch)

    def rows(self, ev_id: int) -> int:
        from arena.models import CaseResult

        self.db.expire_all()
        return self.db.scalar(select(func.count(CaseResult.id)).where(CaseResult.evaluation_id == ev_id)) or 0

    def close(self, docker_engine) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.server.stop()
        for c in docker_engine.containers.list(all=True, filters={"label": f"arena.queue={self.queue}"}):
            c.remove(force=True)
        # a SIGKILLed worker leaves its /output tmpfs mounted: unmount what lies under this test's folders
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(str(self.tmp))), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)


@pytest.fixture
def world(tmp_path, settings, db, arena_env, redis_url, docker_engine, request, monkeypatch):
    """The server, a local worker and a registered site (its worker not started: tests start their own).
    ``request.param`` (indirect parametrization), optional: {"stale_s": the server's ARENA_STALE_AFTER_S
    (default 60), "database": "postgresql" for a private PostgreSQL on 127.0.0.1 instead of SQLite}."""
    from arena.kinds import kind_for
    from arena.tasks.spec import load_spec
    from arena.tasks.store import add_case, upsert_task
    from arena.users import create_token, create_user

    why = _site_ready()
    if why:
        pytest.skip(why)
    if not tiny_images_available():
        pytest.skip("needs Debian's busybox-static (/bin/busybox) and a docker CLI for the tiny test images")
    opts = getattr(request, "param", {})
    stale_s = opts.get("stale_s", 60)
    pg = None
    if opts.get("database") == "postgresql":
        if os.environ.get("ARENA_TEST_POSTGRES_URL"):
            pytest.skip("the PostgreSQL pass runs the default variant on PostgreSQL already")
        if postgres_unavailable():
            pytest.skip(postgres_unavailable())
        pg = PrivatePostgres("127.0.0.1")
        request.addfinalizer(pg.destroy)
        pg.start()
        upgrade(pg.url)
        arena_env = {**arena_env, "ARENA_DATABASE_URL": pg.url}
        monkeypatch.setenv("ARENA_DATABASE_URL", pg.url)
        settings = replace(settings, database_url=pg.url)
        db = session_factory(pg.url)()
        request.addfinalizer(db.close)
    task = upsert_task(db, REPO / "tasks" / TASK)
    spec = load_spec(REPO / "tasks" / TASK)
    kind = kind_for(spec)
    local = {p.slug: p for p in task.phases}[LOCAL_PHASE]
    local_keys = ["local-000", "local-001"]
    for i, key in enumerate(local_keys):
        demo = kind.write_demo_case(spec, tmp_path / "local-cases", key, i, "small")
        add_case(db, settings, task, key, demo.image, demo.reference, [local], meta=demo.meta)
    api_tokens = []
    for i in range(5):
        user, _ = create_user(db, f"p{i}", team=f"Team {i}")
        api_tokens.append(create_token(db, user)[1])
    db.commit()

    env = clean_env(**arena_env, ARENA_REDIS_URL=redis_url, ARENA_HEARTBEAT_S="1", ARENA_STALE_AFTER_S=str(stale_s))
    arena_cli(env, "site", "add", SITE)
    arena_cli(env, "site", "assign", SITE, f"{TASK}/{SITE_PHASE}")
    token = issue_site_token(env, SITE, [f"{TASK}/{SITE_PHASE}"])

    marker = f"arena-site-marker-{uuid.uuid4().hex}"
    tag = uuid.uuid4().hex[:6]
    keys = [f"hosp-{tag}-{i:03d}" for i in range(3)]
    site_home = tmp_path / "site-home"
    sums = write_site_cases(site_home / "site-data" / TASK / SITE_PHASE, REPO / "tasks" / TASK, keys, marker)

    link = make_link("arena-site")  # from here on, whatever fails destroys the link
    w = None
    try:
        port = free_port(link.root_ip)
        try:
            firewall_namespace(link.ns, link.root_ip, port)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"iptables in the namespace not permitted: {e.stderr.decode(errors='replace').strip()}")
        server = Server(env, link.root_ip, port, tmp_path / "server.log")
        w = World(tmp_path, settings, db, env, link, server, site_home, keys, local_keys, sums, marker, token,
                  arena_env["ARENA_QUEUE"], api_tokens)
        server.start()
        w.procs.append(Proc([sys.executable, "-m", "arena.cli", "worker"], env, tmp_path / "local-worker.log"))
        yield w
    finally:
        if w is not None:
            w.close(docker_engine)
        link.destroy()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("world", [{}, {"database": "postgresql"}], indirect=True, ids=["sqlite", "postgresql"])
def test_site_phase_runs_only_at_the_site(world):
    """The issue's acceptance test: site-phase evaluations run only at the site (two site workers), each
    case once, a local phase's on the local worker meanwhile; the server never holds the site's files; no
    participant-visible answer names a site case."""
    from arena.models import Case, Evaluation

    w = world
    # the namespace is another host: only the server's port is reachable from it
    redis, db = urlsplit(w.env["ARENA_REDIS_URL"]), urlsplit(w.env["ARENA_DATABASE_URL"])
    targets = [f"{w.link.root_ip}:{w.server.port}", f"{redis.hostname}:{redis.port or 6379}",
               f"{w.link.root_ip}:{redis.port or 6379}", f"{w.link.root_ip}:{free_port(w.link.root_ip)}"]
    if db.hostname:  # PostgreSQL (ARENA_TEST_POSTGRES_URL); SQLite is a file: see the module docstring
        targets += [f"{db.hostname}:{db.port or 5432}", f"{w.link.root_ip}:{db.port or 5432}"]
    reach = probe_ports(w.link.enter, targets)
    assert reach.pop(f"{w.link.root_ip}:{w.server.port}") == "open", reach
    assert all(v != "open" for v in reach.values()), reach

    # two workers at the site (two GPUs of one machine: one ARENA_HOME, as deploy/arena-site-worker.service has it)
    site, site2 = w.start_site_worker(), w.start_site_worker()
    w.wait_registered(site)
    for p in (site, site2):
        assert p.alive(), p.text()[-3000:]  # both workers started together: the same cases registered twice at once
        assert w.link.in_namespace(p.pid)
        environ = Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")
        assert not [e for e in environ if e.startswith((b"ARENA_DATABASE_URL=", b"ARENA_REDIS_URL="))]

    site_subs = [w.submit(0, SITE_PHASE), w.submit(1, SITE_PHASE), w.submit(4, SITE_PHASE)]
    local_subs = [w.submit(2, LOCAL_PHASE), w.submit(3, LOCAL_PHASE)]
    evs = {sid: w.evaluations_of(sid) for sid in site_subs + local_subs}
    assert all(len(v) == 1 for v in evs.values()), evs
    ev_ids = {sid: v[0].id for sid, v in evs.items()}
    finished = {sid: w.wait_finished(e, watch=site) for sid, e in ev_ids.items()}
    for sid, ev in finished.items():
        assert ev.status == EvaluationStatus.SUCCEEDED, (sid, ev.status, ev.error)
        assert case_counts(w.db, ev.id) == [1] * (len(w.keys) if sid in site_subs else len(w.local_keys))
        assert all(cr.status == CaseStatus.SUCCEEDED for cr in ev.case_results)
        assert all(cr.metrics for cr in ev.case_results)  # scored: the per-label values came back
    for sid in site_subs:
        ev = finished[sid]
        assert ev.worker.startswith((f"site:{SITE}:w1:", f"site:{SITE}:w2:")), ev.worker
        assert sorted(cr.case.key for cr in ev.case_results) == sorted(w.keys)
        assert all(cr.output_path in (None, "") for cr in ev.case_results)  # outputs stay at the site
    for sid in local_subs:
        assert not finished[sid].worker.startswith("site:"), finished[sid].worker
    print(f"\nsite evaluations run by: {sorted(finished[sid].worker.split(':')[2] for sid in site_subs)}")
    local_log = w.procs[0].text()
    assert not _local_jobs(local_log) & {ev_ids[s] for s in site_subs}, "a local worker ran a site evaluation"
    assert _local_jobs(local_log) >= {ev_ids[s] for s in local_subs}

    # the server's store: no copy of a site file, no byte of its marker
    all_sums = {h for s in w.sums.values() for h in s.values()}
    assert scan_store(w.settings.home, all_sums, w.marker.encode()) == []
    assert scan_store(Path(w.env["ARENA_RUN_DIR"]), all_sums, w.marker.encode()) == []  # the server's runs
    # ...while the scan does find them where they are (it would have caught a copy)
    assert len(scan_store(w.site_home / "site-data", all_sums, w.marker.encode())) == 2 * len(w.keys)
    # what the server knows of a site case: its key and checksums, no file
    site_cases = w.db.scalars(select(Case).where(Case.key.in_(w.keys))).all()
    assert len(site_cases) == len(w.keys)
    for c in site_cases:
        assert (c.image_path, c.reference_path) == ("", "")
        assert c.meta["site"] == {"site": SITE, "sha256": w.sums[c.key]}

    # no participant-visible answer names a site case (keys, checksums, marker)
    secrets = [*w.keys, *all_sums, w.marker]
    for who, tok in (("team 0", w.api_tokens[0]), ("team 2", w.api_tokens[2]), ("anonymous", None)):
        answers = participant_answers(w.server.url, tok, TASK, [SITE_PHASE, LOCAL_PHASE], site_subs + local_subs)
        leaks = [(path, s) for path, body in answers.items() for s in secrets if s in body]
        assert leaks == [], (who, leaks[:5])
    # the board has the site's entries, scored (the team names are public, their cases are not)
    board = requests.get(f"{w.server.url}/api/v1/tasks/{TASK}/leaderboard?phase={SITE_PHASE}", timeout=30)
    assert board.status_code == 200 and all(f"Team {i}" in board.text for i in (0, 1, 4)), board.text[:2000]
    # the walk does see case keys where a phase shows them (the local phase shows its cases to the team)
    own = participant_answers(w.server.url, w.api_tokens[2], TASK, [LOCAL_PHASE], [local_subs[0]])
    assert any(w.local_keys[0] in body for body in own.values())
    assert w.db.scalar(select(func.count(Evaluation.id))) == 5


@pytest.mark.docker
@pytest.mark.slow
def test_server_restart_mid_evaluation(world):
    """The server goes away mid-evaluation: the site worker keeps its finished cases (spool) and reports
    them when the server is back; the evaluation completes with each case recorded once."""
    w = world
    site = w.start_site_worker()
    w.wait_registered(site)
    ev_id = w.evaluations_of(w.submit(0, SITE_PHASE, slow_s=4))[0].id
    w.wait(lambda: w.rows(ev_id) >= 1, "the first case result", watch=site)
    w.server.stop()
    spool = w.site_home / "site-spool" / f"evaluation-{ev_id}"
    deadline = time.monotonic() + 120
    while not (spool.is_dir() and any(spool.glob("*.json"))):  # a case finished while the server was away
        assert site.alive(), site.text()[-3000:]
        assert time.monotonic() < deadline, f"nothing spooled in {spool}:\n{site.text()[-3000:]}"
        time.sleep(0.3)
    w.server.start()
    ev = w.wait_finished(ev_id, watch=site)
    assert ev.status == EvaluationStatus.SUCCEEDED, (ev.status, ev.error, site.text()[-2000:])
    assert case_counts(w.db, ev_id) == [1] * len(w.keys)
    assert w.rows(ev_id) == len(w.keys)
    w.wait(lambda: not any(spool.glob("*.json")), "the spool to empty", 60, site)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("world", [{"stale_s": 8}], indirect=True)  # ARENA_STALE_AFTER_S on the server
def test_site_worker_killed_mid_case(world, docker_engine):
    """SIGKILL the site worker while a case runs: the lease lapses, the evaluation is re-queued and another
    site worker finishes it; the cases the first one reported are kept, each case recorded once."""
    w = world
    first = w.start_site_worker("first")
    w.wait_registered(first)
    ev_id = w.evaluations_of(w.submit(0, SITE_PHASE, slow_s=4))[0].id
    w.wait(lambda: w.rows(ev_id) >= 1, "the first case result", watch=first)
    w.wait(lambda: docker_engine.containers.list(filters={"label": [f"arena.evaluation={ev_id}"]}),
           "the next case's container", 60, first)
    first.kill()
    n_before = w.rows(ev_id)
    for c in docker_engine.containers.list(all=True, filters={"label": [f"arena.evaluation={ev_id}"]}):
        c.remove(force=True)  # the orphan the killed worker left (its host would clean it at restart)
    w.wait(lambda: w.evaluation(ev_id).status == EvaluationStatus.QUEUED, "the lapsed lease to be re-queued", 120)
    assert w.rows(ev_id) == n_before  # re-queued with the reported cases kept
    second = w.start_site_worker("second")
    ev = w.wait_finished(ev_id, watch=second)
    assert ev.status == EvaluationStatus.SUCCEEDED, (ev.status, ev.error)
    assert ev.worker.startswith(f"site:{SITE}:second:"), ev.worker
    assert case_counts(w.db, ev_id) == [1] * len(w.keys)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("world", [{"stale_s": 8}], indirect=True)
def test_token_revoked_mid_evaluation(world):
    """Revoking the token stops the worker (401 from then on); the lease lapses and the evaluation is
    re-queued; a worker with a new token finishes it, each case recorded once."""
    from arena.models import WorkerToken
    from arena.site.server import revoke_worker_token

    w = world
    site = w.start_site_worker()
    w.wait_registered(site)
    ev_id = w.evaluations_of(w.submit(0, SITE_PHASE, slow_s=4))[0].id
    w.wait(lambda: w.rows(ev_id) >= 1, "the first case result", watch=site)
    (tok,) = w.db.scalars(select(WorkerToken)).all()
    revoke_worker_token(w.db, tok.id)  # what `arena site revoke` does (the protocol test runs the CLI), at once
    w.db.commit()
    r = requests.post(f"{w.server.url}/api/v1/site/claim", json={"worker": "x"},
                      headers={"Authorization": f"Bearer {w.token}"}, timeout=30)
    assert r.status_code == 401 and "error" in r.json(), (r.status_code, r.text)
    w.wait(lambda: not site.alive(), "the site worker to stop after the revocation", 120, site)
    ev = w.evaluation(ev_id)
    assert not ev.status.finished and w.rows(ev_id) < len(w.keys)
    w.wait(lambda: w.evaluation(ev_id).status == EvaluationStatus.QUEUED, "the lapsed lease to be re-queued", 120)
    token2 = issue_site_token(w.env, SITE, [f"{TASK}/{SITE_PHASE}"])
    again = w.start_site_worker("again", token=token2)
    ev = w.wait_finished(ev_id, watch=again)
    assert ev.status == EvaluationStatus.SUCCEEDED, (ev.status, ev.error)
    assert case_counts(w.db, ev_id) == [1] * len(w.keys)


# -- the protocol in-process: replays, scope, leases -----------------------------------------------------

def _site_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _site_phase_assigned(db, arena_env: dict, redis_url: str) -> dict[str, str]:
    """The task stored and its site phase assigned to SITE (skips where the site machinery is missing);
    returns the CLI's environment."""
    from arena.tasks.store import upsert_task

    why = _site_ready(worker=False)
    if why:
        pytest.skip(why)
    upsert_task(db, REPO / "tasks" / TASK)
    db.commit()
    env = clean_env(**arena_env, ARENA_REDIS_URL=redis_url)
    arena_cli(env, "site", "add", SITE)
    arena_cli(env, "site", "assign", SITE, f"{TASK}/{SITE_PHASE}")
    return env


def test_replayed_and_out_of_scope_reports_are_refused(settings, db, arena_env, redis_url, app, tmp_path):
    """A result for a case already recorded is refused (409) and nothing is overwritten; a report without
    the lease, for a key the phase lacks, or with a token of another phase is refused; a revoked token
    gets 401; the image is served (with Range) only to the lease holder."""
    from arena.models import CaseResult, Evaluation, Submission
    from arena.runner.jobs import create_evaluation
    from arena.submissions.intake import create_submission, store_upload
    from arena.users import create_user

    env = _site_phase_assigned(db, arena_env, redis_url)
    token = issue_site_token(env, SITE, [f"{TASK}/{SITE_PHASE}"])
    client = app.test_client()
    h = _site_headers(token)
    keys = ["k-000", "k-001"]
    cases = [{"key": k, "image_sha256": f"{i:064x}", "reference_sha256": f"{i + 10:064x}"} for i, k in enumerate(keys)]
    r = client.post("/api/v1/site/cases", json={"task": TASK, "phase": SITE_PHASE, "cases": cases}, headers=h)
    assert r.status_code == 200 and r.get_json() == {"added": 2, "unchanged": 0}, r.get_data(as_text=True)
    r = client.post("/api/v1/site/cases", json={"task": TASK, "phase": SITE_PHASE, "cases": cases}, headers=h)
    assert r.get_json() == {"added": 0, "unchanged": 2}
    changed = [{**cases[0], "reference_sha256": "f" * 64}]
    r = client.post("/api/v1/site/cases", json={"task": TASK, "phase": SITE_PHASE, "cases": changed}, headers=h)
    assert r.status_code == 409 and "error" in r.get_json()
    # a stolen token used for another phase
    r = client.post("/api/v1/site/cases", json={"task": TASK, "phase": LOCAL_PHASE, "cases": cases}, headers=h)
    assert r.status_code in (403, 404) and "error" in r.get_json()
    assert client.post("/api/v1/site/claim", json={"worker": "a"}).status_code == 401
    assert client.post("/api/v1/site/claim", json={"worker": "a"},
                       headers=_site_headers("arena-site-" + "x" * 43)).status_code == 401
    assert client.post("/api/v1/site/claim", json={"worker": "a"}, headers=h).status_code == 204  # nothing queued
    for path in ("/api/v1/me", "/api/v1/submissions", "/api/v1/evaluations"):  # no API token
        assert client.get(path, headers=h).status_code == 401, path

    # a validated submission of the site phase, its stored upload a real file the server can serve
    payload = bytes(range(256)) * 64
    upload = store_upload(io.BytesIO(payload), settings)
    user, _ = create_user(db, "p0", team="Team 0")
    sub = create_submission(db, TASK, SITE_PHASE, user, upload)  # not an image: no archive check
    sub.set_status(SubmissionStatus.VALIDATED)
    sub.image_id = "sha256:" + "1" * 64
    db.commit()
    ev_id = create_evaluation(settings, sub.id)
    r = client.post("/api/v1/site/claim", json={"worker": "a"}, headers=h)
    assert r.status_code == 200, r.get_data(as_text=True)
    claim = r.get_json()
    assert claim["evaluation"] == ev_id and claim["cases"] == keys and claim["cases_total"] == 2
    lease = claim["lease"]
    db.expire_all()
    assert db.get(Evaluation, ev_id).worker == f"site:{SITE}:a:{lease}"
    assert claim["image"]["sha256"] == db.get(Submission, sub.id).upload_sha256
    r = client.get(claim["image"]["url"], headers={**h, "Range": "bytes=1000-"})
    assert r.status_code == 206 and r.data == payload[1000:]
    assert client.get(f"/api/v1/site/images/{'a' * 64}", headers=h).status_code == 404

    def report(key: str, dice: float, lease_: str = lease, ev: int = ev_id):
        return client.post(f"/api/v1/site/evaluations/{ev}/cases/{key}", headers=h, json={
            "lease": lease_, "status": "succeeded", "scores": {"1": {"dice": dice, "hd95": 2.0}}, "error": None,
            "failure": None, "exit_code": 0, "runtime_s": 1.5, "stats": {"cpu_s": 0.5, "peak_memory_mb": 12.0},
            "log_tail": "done"})

    assert report(keys[0], 0.9).status_code == 201
    r = report(keys[0], 0.1)  # replayed (or forged) with another score
    assert r.status_code == 409 and "error" in r.get_json()
    assert report(keys[1], 0.5, lease_="not-the-lease").status_code == 409
    assert report("no-such-case", 0.5).status_code == 404
    rows = db.scalars(select(CaseResult).where(CaseResult.evaluation_id == ev_id)).all()
    assert len(rows) == 1 and [(m.label, m.metric, m.value) for m in rows[0].metrics] == [(1, "dice", 0.9),
                                                                                         (1, "hd95", 2.0)]
    assert rows[0].cpu_s == 0.5 and rows[0].log_tail == "done"
    hb = client.post(f"/api/v1/site/evaluations/{ev_id}/heartbeat", json={"lease": lease}, headers=h)
    assert hb.status_code == 200 and hb.get_json() == {"ok": True}
    assert client.post(f"/api/v1/site/evaluations/{ev_id}/heartbeat", json={"lease": "x"}, headers=h).status_code == 409
    assert report(keys[1], 0.5).status_code == 201
    r = client.post(f"/api/v1/site/evaluations/{ev_id}/finish", json={"lease": lease, "stop": None}, headers=h)
    assert r.status_code == 200 and r.get_json() == {"status": "succeeded"}
    assert report(keys[1], 0.7).status_code == 409  # late
    db.expire_all()
    assert case_counts(db, ev_id) == [1, 1]
    assert db.get(Evaluation, ev_id).status == EvaluationStatus.SUCCEEDED

    # revoked: 401 from then on
    from arena.models import WorkerToken

    (tok,) = db.scalars(select(WorkerToken)).all()
    arena_cli(env, "site", "revoke", str(tok.id))
    assert client.post("/api/v1/site/claim", json={"worker": "a"}, headers=h).status_code == 401


def test_local_workers_never_claim_a_site_phase(settings, db, arena_env, redis_url):
    """A site phase's evaluation is not put on RQ, and a local worker's claim refuses it."""
    from arena.runner.jobs import _claim, create_evaluation, get_queue
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.users import create_user

    _site_phase_assigned(db, arena_env, redis_url)
    user, _ = create_user(db, "p0", team="Team 0")
    sub = create_submission(db, TASK, SITE_PHASE, user, StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
    sub.set_status(SubmissionStatus.VALIDATED)
    db.commit()
    from dataclasses import replace

    s = replace(settings, redis_url=redis_url)
    ev_id = create_evaluation(s, sub.id)
    assert len(get_queue(s)) == 0
    assert _claim(s, ev_id, "host:1") == "elsewhere"

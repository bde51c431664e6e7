"""Site workers (issue 18): per-case overhead of a site worker against a local worker, and the server's
result intake with concurrent site-worker clients.

    python benchmarks/bench_site_worker.py [--cases 6] [--rounds 3] [--clients 8] [--results 40]

1. Per-case overhead. One `arena serve` (gunicorn), one local `arena worker` and one `arena site-worker`
   (both on this machine's Docker Engine) evaluate the same tiny image (``good``: writes an all-background
   label map; busybox, benchmarks/tiny_images.py) on ``--cases`` synthetic han-oar-22 cases of the same
   generator and size each: the local worker a local phase (cases on the server), the site worker a site
   phase (cases in its own folder). Evaluations run one at a time, alternating, ``--rounds`` of each. Per
   case: the median gap between consecutive case results of an evaluation (the server's record times),
   which leaves out the one-off start (claim, image download and load); the site's adds its HTTP report,
   the heartbeat thread and scoring at the site. Target: site − local ≤ 0.2 s per case.
2. Result intake. ``--clients`` threads, each acting as a site worker with its own claimed evaluation
   (one team each), post ``--results`` case results (22 labels × 2 metrics and the run statistics, as
   a worker sends them) back to back, then as many heartbeats; prints requests/s and the p50/p95 latency
   of one request, for each kind.

Both parts use SQLite in a temporary ARENA_HOME (as the tests do), or with ``--postgres`` a private
PostgreSQL 15 cluster (runner_helpers.PrivatePostgres; the production choice).

Measured on the development machine (2 cores shared with other jobs: load average 2–12 over the runs,
which is most of the spread; Debian's docker.io; gunicorn with 4 processes):

    per case (median gap)       local    site     site − local
    SQLite, 3 rounds, load 9–12 1.70 s   1.56 s   −0.13 s
    PostgreSQL, 4 rounds, ≈12   1.85 s   2.04 s   +0.19 s
    SQLite, 5 rounds, load 6→2  0.83 s   0.57 s   −0.26 s
    PostgreSQL, 4 rounds, 4–5   0.52 s   0.62 s   +0.10 s      (target ≤ 0.2 s: met in every run)

    intake, 8 clients × 40      reports/s  p50 / p95        heartbeats/s  p50 / p95
    SQLite, load 2–5            40.6       143 / 415 ms     120.7         60 / 112 ms
    PostgreSQL, load 2–5        39.9–79.2  85–182 / 180–347 104.8–106.8   70–74 / 96–113 ms
    SQLite, load 8–12           16.2–19.6  307–366 / 808–1029  53.9       140 / 229 ms
    PostgreSQL, load ≈12        14.4       480 / 892 ms     —             —
    SQLite, idle (load ≤ 1)     96.9–179.6 28–60 / 85–146   261–467       16–30 / 23–41 ms   (at 17d5db1–6e6510e)
    PostgreSQL, idle            115.2      61 / 106 ms      307.6         26 / 35 ms

The idle SQLite rows span four runs in ten minutes (one at d12d4e9, before this stop's site changes: 160.2/s,
p95 114 ms): what the server changed between them is within the run-to-run spread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker
import requests
from sqlalchemy import select

from arena.config import load_settings
from arena.db import session_factory, session_scope, upgrade
from arena.kinds import kind_for
from arena.lifecycle import SubmissionStatus
from arena.models import Evaluation, Task
from arena.runner.jobs import create_evaluation
from arena.submissions.intake import create_submission, store_upload
from arena.tasks.spec import load_spec
from arena.tasks.store import add_case, upsert_task
from arena.users import create_user

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from runner_helpers import (  # noqa: E402
    PrivatePostgres,
    build_tiny_image,
    free_port,
    postgres_unavailable,
    save_image,
    tiny_images_available,
)
from site_helpers import Proc, Server, arena_cli, clean_env, issue_site_token, site_worker, write_site_cases  # noqa: E402

TASK, SITE_PHASE, LOCAL_PHASE, SITE = "han-oar-22", "test", "validation", "bench"


def _gaps(ev) -> list[float]:
    """Seconds between consecutive case results of an evaluation (server record times)."""
    t = sorted(cr.created_at for cr in ev.case_results)
    return [(b - a).total_seconds() for a, b in zip(t, t[1:])]


def _wait_finished(factory, ev_id: int, timeout_s: float, watch: list[Proc]) -> Evaluation:
    """The evaluation (detached, its case results loaded) once finished; exits after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with factory() as s:
            ev = s.get(Evaluation, ev_id)
            if ev.status.finished:
                _ = [(cr.created_at, cr.status) for cr in ev.case_results]  # load before the session closes
                s.expunge_all()
                return ev
        if time.monotonic() > deadline:
            raise SystemExit(f"evaluation {ev_id} did not finish in {timeout_s:.0f} s:\n"
                             + "\n".join(p.text()[-2000:] for p in watch))
        time.sleep(0.2)


def _submission(s, settings, team: int, phase: str, tarball: Path, image_id: str) -> int:
    """A validated submission of ``image_id`` by a new team, its stored upload a copy of ``tarball``."""
    user, _ = create_user(s, f"b{team}", team=f"Bench {team}")
    with open(tarball, "rb") as f:
        upload = store_upload(f, settings)
    sub = create_submission(s, TASK, phase, user, upload, settings=settings)
    sub.set_status(SubmissionStatus.VALIDATED)
    sub.image_id = image_id
    s.flush()
    return sub.id


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6, help="cases per evaluation in part 1")
    ap.add_argument("--rounds", type=int, default=3, help="evaluations of each kind in part 1")
    ap.add_argument("--clients", type=int, default=8, help="concurrent site-worker clients in part 2")
    ap.add_argument("--results", type=int, default=40, help="case results each client posts in part 2")
    ap.add_argument("--server-workers", type=int, default=4, help="gunicorn processes")
    ap.add_argument("--only", choices=["overhead", "intake"], help="run one part only")
    ap.add_argument("--postgres", action="store_true", help="a private PostgreSQL 15 cluster instead of SQLite")
    args = ap.parse_args()
    if not tiny_images_available():
        raise SystemExit("needs Debian's busybox-static and a docker CLI (benchmarks/tiny_images.py)")
    pg = None
    if args.postgres:
        if postgres_unavailable():
            raise SystemExit(postgres_unavailable())
        pg = PrivatePostgres()
        pg.start()
    try:
        run(args, pg.url if pg else None)
    finally:
        if pg is not None:
            pg.destroy()


def run(args, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-site-"))
    home, site_home = tmp / "home", tmp / "site-home"
    env = clean_env(ARENA_HOME=str(home), ARENA_QUEUE=f"bench-site-{uuid.uuid4().hex[:6]}",
                    ARENA_DATABASE_URL=database_url or f"sqlite:///{home / 'arena.db'}", ARENA_RUN_DIR=str(tmp / "runs"),
                    ARENA_HEARTBEAT_S="2", ARENA_STALE_AFTER_S="120")
    os.environ.update(env)
    print(f"database: {'PostgreSQL 15 (private cluster)' if database_url else 'SQLite'}; "
          f"gunicorn processes: {args.server_workers}", flush=True)
    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    spec = load_spec(REPO / "tasks" / TASK)
    kind = kind_for(spec)
    with session_scope(settings.database_url) as s:
        task = upsert_task(s, REPO / "tasks" / TASK)
        local = {p.slug: p for p in task.phases}[LOCAL_PHASE]
        for i in range(args.cases):  # the same generator, size and seeds as the site's cases
            demo = kind.write_demo_case(spec, tmp / "local-cases", f"local-{i:03d}", 900 + i, "small")
            add_case(s, settings, task, f"local-{i:03d}", demo.image, demo.reference, [local], meta=demo.meta)
    arena_cli(env, "site", "add", SITE)
    arena_cli(env, "site", "assign", SITE, f"{TASK}/{SITE_PHASE}")
    token = issue_site_token(env, SITE, [f"{TASK}/{SITE_PHASE}"])
    keys = [f"site-{i:03d}" for i in range(args.cases)]
    write_site_cases(site_home / "site-data" / TASK / SITE_PHASE, REPO / "tasks" / TASK, keys, "bench")

    tag = build_tiny_image("good", variant=f"bench-site-{uuid.uuid4().hex[:6]}")
    tarball = save_image(tag, tmp / "good.tar")
    image_id = docker.from_env().images.get(tag).id
    server = Server(env, "127.0.0.1", free_port(), tmp / "server.log", workers=args.server_workers)
    procs: list[Proc] = []
    try:
        server.start()
        team = 0
        if args.only != "intake":
            team = overhead(args, settings, env, server, token, site_home, tarball, image_id, procs, tmp)
        for p in procs:
            p.stop()
        procs.clear()
        if args.only != "overhead":
            intake(args, settings, server, token, tarball, image_id, team, spec)
    finally:
        for p in procs:
            p.stop()
        server.stop()
        for c in docker.from_env().containers.list(all=True, filters={"label": f"arena.queue={env['ARENA_QUEUE']}"}):
            c.remove(force=True)
        shutil.rmtree(tmp, ignore_errors=True)


def overhead(args, settings, env, server: Server, token: str, site_home: Path, tarball: Path, image_id: str,
             procs: list[Proc], tmp: Path) -> int:
    """Part 1: evaluations on the local worker and on the site worker, alternating; prints the per-case
    medians and their difference. Returns the number of teams used."""
    procs.append(Proc([sys.executable, "-m", "arena.cli", "worker"], env, tmp / "local-worker.log"))
    procs.append(site_worker([], server.url, token, site_home, "bench", tmp / "site-worker.log", env["ARENA_QUEUE"]))
    factory = session_factory(settings.database_url)
    deadline = time.monotonic() + 300
    while True:  # the site registers its cases
        with factory() as s:
            task = s.scalar(select(Task).where(Task.slug == TASK))
            n = len(next(p for p in task.phases if p.slug == SITE_PHASE).cases)
        if n >= args.cases:
            break
        if time.monotonic() > deadline or not procs[1].alive():
            raise SystemExit(f"the site never registered its cases:\n{procs[1].text()[-3000:]}")
        time.sleep(0.5)
    gaps: dict[str, list[float]] = {"local": [], "site": []}
    walls: dict[str, list[float]] = {"local": [], "site": []}
    team = 0
    for r in range(args.rounds):
        for where, phase in (("local", LOCAL_PHASE), ("site", SITE_PHASE)):
            with session_scope(settings.database_url) as s:
                sid = _submission(s, settings, team, phase, tarball, image_id)
            team += 1
            ev_id = create_evaluation(settings, sid)
            ev = _wait_finished(factory, ev_id, 600, procs)
            if ev.status.value != "succeeded":
                raise SystemExit(f"{where} evaluation {ev_id}: {ev.status.value}: {ev.error}")
            gaps[where] += _gaps(ev)
            walls[where].append((ev.finished_at - ev.started_at).total_seconds())
            print(f"round {r + 1} {where:5s}: evaluation {ev_id}, {len(ev.case_results)} cases, "
                  f"{walls[where][-1]:.2f} s claimed→finished, median gap {statistics.median(_gaps(ev)):.3f} s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in gaps.items()}
    print("\nper case (median gap between consecutive case results)")
    print(f"  local worker   {med['local']:.3f} s   ({len(gaps['local'])} gaps)")
    print(f"  site worker    {med['site']:.3f} s   ({len(gaps['site'])} gaps)")
    print(f"  difference     {med['site'] - med['local']:+.3f} s   (target ≤ 0.2 s)")
    print(f"  per evaluation (claimed→finished, median): local {statistics.median(walls['local']):.2f} s, "
          f"site {statistics.median(walls['site']):.2f} s", flush=True)
    return team


def intake(args, settings, server: Server, token: str, tarball: Path, image_id: str, team: int, spec) -> None:
    """Part 2: ``args.clients`` threads, each holding one claimed evaluation, post ``args.results`` case
    results back to back; prints results/s and the latency percentiles of one report."""
    h = {"Authorization": f"Bearer {token}"}
    load = [{"key": f"load-{i:04d}", "image_sha256": f"{i:064x}", "reference_sha256": f"{i + 1:064x}"}
            for i in range(args.results)]
    r = requests.post(f"{server.url}/api/v1/site/cases", json={"task": TASK, "phase": SITE_PHASE, "cases": load},
                      headers=h, timeout=60)
    r.raise_for_status()
    for _ in range(args.clients):
        with session_scope(settings.database_url) as s:
            sid = _submission(s, settings, team, SITE_PHASE, tarball, image_id)
        team += 1
        create_evaluation(settings, sid)
    scores = {str(lab): {"dice": 0.5, "hd95": 7.5} for lab in spec.labels}
    stats = {"cpu_s": 0.8, "peak_memory_mb": 60.0, "pids_peak": 3, "gpu_memory_peak_mb": None,
             "gpu_utilization_mean": None}
    latencies: dict[str, list[float]] = {"report": [], "heartbeat": []}
    errors: list[str] = []
    lock = threading.Lock()
    barriers = {k: threading.Barrier(args.clients + 1) for k in latencies}

    def client(i: int) -> None:
        with requests.Session() as sess:
            sess.headers.update(h)
            claim = sess.post(f"{server.url}/api/v1/site/claim", json={"worker": f"c{i}"}, timeout=60)
            c = claim.json() if claim.status_code == 200 else None
            if c is None:
                errors.append(f"client {i}: claim {claim.status_code} {claim.text[:200]}")
            todo = [k for k in c["cases"] if k.startswith("load-")][: args.results] if c else []
            url = f"{server.url}/api/v1/site/evaluations/{c['evaluation']}" if c else ""
            for what in ("report", "heartbeat"):
                barriers[what].wait()
                mine = []
                for key in todo:
                    t0 = time.perf_counter()
                    if what == "report":
                        rr = sess.post(f"{url}/cases/{key}", timeout=60, json={
                            "lease": c["lease"], "status": "succeeded", "scores": scores, "error": None,
                            "failure": None, "exit_code": 0, "runtime_s": 1.0, "stats": stats, "log_tail": "ok"})
                    else:
                        rr = sess.post(f"{url}/heartbeat", json={"lease": c["lease"]}, timeout=60)
                    mine.append(time.perf_counter() - t0)
                    if rr.status_code not in (200, 201):
                        errors.append(f"client {i}: {what} {key}: {rr.status_code} {rr.text[:200]}")
                with lock:
                    latencies[what].extend(mine)
                barriers[what].wait()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for what, lat in latencies.items():
        barriers[what].wait()  # every client has claimed (and finished the previous kind)
        t0 = time.perf_counter()
        barriers[what].wait()  # every client has sent its requests
        wall = time.perf_counter() - t0
        if len(lat) < 2:
            raise SystemExit(f"no {what} was taken: {errors[:5]}")
        p95 = statistics.quantiles(lat, n=20)[18]
        print(f"\n{what}s: {args.clients} clients, {len(lat)} in {wall:.2f} s = {len(lat) / wall:.1f}/s; "
              f"latency p50 {statistics.median(lat) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms", flush=True)
    for t in threads:
        t.join()
    if errors:
        print(f"{len(errors)} refused:", *errors[:10], sep="\n  ")

if __name__ == "__main__":
    main()

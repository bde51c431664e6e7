"""Throughput with 1 vs 2 workers on this machine, and queue latency (submission → first case start).

Each evaluation runs a CPU-bound algorithm (busybox shell loop, BURN_S seconds per case; the task limits
each container to one core) on 2 cases; evaluations come from distinct teams (no per-team waiting).
Prints evaluations/min for 1 and 2 workers and their ratio (target ≥ 1.8 on an idle 2-core machine),
then the pickup latency of single submissions to an idle worker.

    python benchmarks/bench_throughput.py [--evaluations 10] [--burn 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import tiny_images  # noqa: E402


def setup(tmp: Path, n_teams: int):
    """A fresh home + SQLite + queue; han-oar-22 with 2 validation cases; returns (settings, env, submission ids)."""
    env = {**os.environ, "ARENA_HOME": str(tmp / "home"), "ARENA_QUEUE": f"tput-{uuid.uuid4().hex[:6]}",
           "ARENA_DATABASE_URL": f"sqlite:///{tmp / 'home' / 'arena.db'}"}
    os.environ.update(env)
    from arena.config import load_settings
    from arena.db import session_scope, upgrade
    from arena.lifecycle import SubmissionStatus
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    image = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", "arena-bench/tiny-burn:latest"],
                           capture_output=True, text=True, check=True).stdout.strip()
    ids = []
    with session_scope(settings.database_url) as s:
        task = upsert_task(s, REPO / "tasks" / "han-oar-22")
        load_demo_cases(s, settings, task, 4)
        for i in range(n_teams):
            user, _ = create_user(s, f"t{i}", team=f"Team {i}")
            sub = create_submission(s, "han-oar-22", "validation", user,
                                    StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
            sub.set_status(SubmissionStatus.VALIDATED)
            sub.image_id = image
            s.flush()
            ids.append(sub.id)
    return settings, env, ids


def run(n_workers: int, n_evals: int, burn: float) -> float:
    """Wall seconds for ``n_workers`` burst workers to finish ``n_evals`` evaluations."""
    from arena.runner.jobs import create_evaluation

    with tempfile.TemporaryDirectory() as d:
        settings, env, subs = setup(Path(d), n_evals)
        env["BURN_S"] = str(burn)
        for sid in subs:
            create_evaluation(settings, sid)
        t0 = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n_workers)]
        for p in procs:
            p.wait()
        return time.monotonic() - t0


def latency(n: int) -> list[float]:
    """Seconds from creating an evaluation to its start on an idle, listening worker."""
    from arena.db import session_scope
    from arena.models import Evaluation
    from arena.runner.jobs import create_evaluation

    out = []
    with tempfile.TemporaryDirectory() as d:
        settings, env, subs = setup(Path(d), n)
        env["BURN_S"] = "0"
        w = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(3)  # let it start listening
            for sid in subs:
                ev_id = create_evaluation(settings, sid)
                while True:
                    with session_scope(settings.database_url) as s:
                        ev = s.get(Evaluation, ev_id)
                        if ev.status.finished:
                            out.append((ev.started_at - ev.created_at).total_seconds())
                            break
                    time.sleep(0.1)
        finally:
            subprocess.run(["pkill", "-TERM", "-s", str(w.pid)], check=False)
            w.wait(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evaluations", type=int, default=10)
    ap.add_argument("--burn", type=float, default=3.0)
    args = ap.parse_args()
    if not tiny_images.available():
        sys.exit("needs /bin/busybox (apt-get install busybox-static) and docker")
    tiny_images.build("burn")
    print(f"{args.evaluations} evaluations × 2 cases, {args.burn:g} s of one core per case; cores: {os.cpu_count()}")
    t1 = run(1, args.evaluations, args.burn)
    t2 = run(2, args.evaluations, args.burn)
    r1, r2 = args.evaluations / t1 * 60, args.evaluations / t2 * 60
    print(f"  1 worker : {t1:6.1f} s  {r1:5.1f} evaluations/min")
    print(f"  2 workers: {t2:6.1f} s  {r2:5.1f} evaluations/min")
    print(f"  ratio 2/1: {r2 / r1:.2f}x (target >= 1.8 on an idle machine)")
    lat = latency(8)
    print(f"queue latency (created -> started, idle worker, n={len(lat)}): median {statistics.median(lat):.2f} s, "
          f"max {max(lat):.2f} s")


if __name__ == "__main__":
    main()

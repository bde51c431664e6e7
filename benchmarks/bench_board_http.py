"""Board page latency under load: gunicorn on 127.0.0.1, wrk with 200 connections, cached board.

Run: python benchmarks/bench_board_http.py [--entries 200] [--cases 50] [--seconds 10] [--workers 2]

Builds a throw-away ARENA_HOME with a 22-organ task, --entries teams × --cases cases × 22 labels ×
2 metrics of results (synthetic numbers written straight to the database), times the cold board
(complete + rank + 1,000-resample bootstrap) in-process, then serves it with gunicorn and runs
`wrk -c 200 --latency` against the board page and the JSON board. Prints p50/p95/p99.
Target (issue 6): cached board p95 ≤ 100 ms; cold board ≤ 2 s. Needs Debian's `wrk`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(home: Path, n_entries: int, n_cases: int) -> None:
    os.environ["ARENA_HOME"] = str(home)
    os.environ.pop("ARENA_DATABASE_URL", None)
    import SimpleITK as sitk
    from sqlalchemy import insert

    from arena.config import load_settings
    from arena.db import session_scope, upgrade
    from arena.lifecycle import CaseStatus, EvaluationStatus, SubmissionStatus
    from arena.models import CaseResult, Evaluation, MetricValue, Submission
    from arena.tasks.store import add_case, upsert_task
    from arena.users import create_user

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    ref = home / "ref.mha"
    img = sitk.Image(64, 64, 32, sitk.sitkUInt8)
    img.SetSpacing((1.0, 1.0, 3.0))
    sitk.WriteImage(img, str(ref))
    rng = np.random.default_rng(0)
    with session_scope(settings.database_url) as s:
        task = upsert_task(s, REPO / "tasks" / "han-oar-22")
        val = next(p for p in task.phases if p.slug == "validation")
        cases = [add_case(s, settings, task, f"case-{i:03d}", ref, ref, [val]) for i in range(n_cases)]
        for e in range(n_entries):
            user, _ = create_user(s, f"user{e}", team=f"Team {e:03d}")
            sub = Submission(task=task, phase=val, team=user.team, user=user, label="v1",
                             status=SubmissionStatus.VALIDATED, image_id=f"sha256:{e}")
            s.add(sub)
            s.flush()
            ev = Evaluation(submission=sub, status=EvaluationStatus.SUCCEEDED, cases_total=n_cases, cases_done=n_cases)
            s.add(ev)
            s.flush()
            skill = rng.uniform(0.5, 0.9)
            for c in cases:
                cr = CaseResult(evaluation_id=ev.id, case_id=c.id, status=CaseStatus.SUCCEEDED)
                s.add(cr)
                s.flush()
                dice = np.clip(skill + rng.normal(0, 0.08, 22), 0, 1)
                hd = np.abs(rng.normal((1 - skill) * 20, 2, 22))
                s.execute(insert(MetricValue), [{"case_result_id": cr.id, "label": lab + 1, "metric": m, "value": float(v)}
                                                for lab in range(22) for m, v in (("dice", dice[lab]), ("hd95", hd[lab]))])


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if m:
            v, unit = float(m.group(1)), m.group(2)
            res[f"p{p}_ms"] = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = int(m.group(1)) if m else 0
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    home = Path(tempfile.mkdtemp(prefix="arena-bench-"))
    try:
        t = time.perf_counter()
        populate(home, args.entries, args.cases)
        print(f"populated {args.entries} entries × {args.cases} cases × 22 organs × 2 metrics in "
              f"{time.perf_counter() - t:.1f} s")
        from arena.config import load_settings
        from arena.db import session_scope
        from arena.leaderboard.query import compute_leaderboard
        from arena.models import Task

        with session_scope(load_settings().database_url) as s:
            task = s.query(Task).one()
            val = next(p for p in task.phases if p.slug == "validation")
            t = time.perf_counter()
            board = compute_leaderboard(s, task, val)
            cold = time.perf_counter() - t
        print(f"cold board (read DB, complete, rank, 1000-resample bootstrap): {cold:.2f} s "
              f"({len(board.table)} rows; target ≤ 2 s)")
        port = free_port()
        env = {**os.environ, "ARENA_HOME": str(home)}
        proc = subprocess.Popen(["gunicorn", "-w", str(args.workers), "-k", "gthread", "--threads", "8",
                                 "-b", f"127.0.0.1:{port}", "arena.web.wsgi:app"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            import requests

            for _ in range(100):
                try:
                    requests.get(f"{base}/api/v1/tasks", timeout=1)
                    break
                except requests.RequestException:
                    time.sleep(0.2)
            for path in ("/tasks/han-oar-22?phase=validation", "/api/v1/tasks/han-oar-22/leaderboard?phase=validation"):
                for _ in range(args.workers * 2):  # warm every worker's cache
                    requests.get(base + path, timeout=120)
                r = wrk(base + path, args.seconds, args.connections)
                print(f"{path:58} p50 {r.get('p50_ms', float('nan')):7.1f} ms  p90 {r.get('p90_ms', float('nan')):7.1f} ms  "
                      f"p99 {r.get('p99_ms', float('nan')):7.1f} ms  {r['rps']:7.1f} req/s  non-2xx {r['errors']}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

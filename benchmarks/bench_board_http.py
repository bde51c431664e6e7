"""Board page latency under load: gunicorn on 127.0.0.1 (2 workers × 8 threads), wrk, beside a static file.

Run: python benchmarks/bench_board_http.py [--entries 200] [--cases 50] [--seconds 10] [--clients 20 200]
(needs Debian's `wrk`; not run in CI). About 3 minutes on the 2-core development machine.

Builds a throw-away ARENA_HOME with a 22-organ task, --entries teams × --cases cases × 22 labels ×
2 metrics of results (synthetic numbers written straight to the database), times the cold board
(complete + rank + 1,000-resample bootstrap) in-process, then serves it with gunicorn and runs
`wrk --latency` at each client count against, one after the other: the board page as a visitor without
an account gets it, the same page revalidated by a browser that has it (If-None-Match → 304), the JSON
board, and a 5.5 kB static file (/static/arena.js) from the same gunicorn. Every request carries a
browser's Accept-Encoding. Prints p50/p95 (from wrk's histogram) and requests/s side by side.
Targets (issue 16): board page p95 within 1.5 × the static file's at 200 clients, ≤ 100 ms at 20 clients.

Measured on the 2-core development machine, shared with other jobs (load average 10-15 during both runs,
so absolute numbers are high for the static file too), 200 entries × 50 cases, commit 4e11232 (before:
the board fragment cached, the page rendered per request) and 53f84e8 (after: arena/web/board_cache.py),
back to back:

p50 / p95 ms (req/s)   20 clients before    20 clients after     200 clients before    200 clients after
board page             135.9 / 579.1 (126)  20.0 / 132.0 (753)   1207.6 / 1899.7 (112) 206.9 / 594.0 (883)
board page, 304        –                    23.4 / 105.2 (701)   –                     123.6 / 488.1 (1293)
JSON board             111.9 / 518.7 (145)  17.3 / 130.6 (911)   1320.3 / 1917.1 (108) 188.3 / 724.8 (837)
static file            31.2 / 111.0 (565)   28.4 / 130.6 (564)   212.6 / 465.0 (721)   414.1 / 738.5 (456)
board p95 / static p95 5.22                 1.01                 4.09                  0.80

The same machine idle (load average 0.6 before serving), commit 6e6510e, same data:

p50 / p95 ms (req/s)   20 clients           200 clients
board page             8.6 / 26.1 (2073)    67.5 / 100.9 (2806)
board page, 304        9.1 / 29.0 (2347)    87.0 / 197.4 (2024)
JSON board             7.8 / 24.9 (2850)    100.7 / 191.7 (2268)
static file            6.6 / 15.3 (2736)    106.3 / 185.5 (1735)
board p95 / static p95 1.70                 0.54

At 20 clients both answer within a few ms of each other, so the ratio there is noise over tiny numbers. The
200-client target (≤ 1.5 × the static file) holds in both runs; the 20-client one (p95 ≤ 100 ms) holds on the
idle machine and not in the busy run above (132 ms, where the static file itself took 131 ms).

Bytes per board page: 836 kB before (no compression), 93 kB gzip after (JSON: 480 kB → 116 kB). Since then
(fac1846: cells sort by their shown text, no data-v copy) the page is 685 kB raw, 40 kB gzip (measured at
96996ba, same data; the timings above were not re-run): half of either is the per-organ cells' links to
the entry pages (4,400 <a href>: 333 kB raw, 20 kB gzip).
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


# wrk's --latency prints p50/p75/p90/p99 only: this report asks its histogram for p95 too (microseconds).
WRK_REPORT = """done = function(summary, latency, requests)
  for _, p in ipairs({50, 95, 99}) do io.write(string.format("P%d %d\\n", p, latency:percentile(p))) end
end
"""

# What a browser sends: every URL of the comparison gets the same request headers.
BROWSER_HEADERS = ("Accept-Encoding: gzip, deflate, br", "Accept: text/html,application/json,*/*")


def wrk(url: str, seconds: int, connections: int, script: Path, headers: tuple[str, ...] = ()) -> dict[str, float]:
    """wrk's p50/p95/p99 (ms), requests per second and count of answers other than 2xx/3xx for ``url``."""
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script)]
    for h in (*BROWSER_HEADERS, *headers):
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    res = {f"p{p}_ms": float(v) / 1000 for p, v in re.findall(r"^P(\d+) (\d+)$", out, re.M)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)$", out, re.M)
    res["socket_errors"] = m.group(1).strip() if m else ""
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=200)
    ap.add_argument("--cases", type=int, default=50)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 200])
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
        print(f"load average (1, 5, 15 min) before serving: {os.getloadavg()}")
        script = home / "report.lua"
        script.write_text(WRK_REPORT)
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
            urls = {"board page": "/tasks/han-oar-22?phase=validation",
                    "JSON board": "/api/v1/tasks/han-oar-22/leaderboard?phase=validation",
                    "static file": "/static/arena.js"}
            browser = dict(h.split(": ", 1) for h in BROWSER_HEADERS)
            rows = [(what, path, ()) for what, path in urls.items()]
            sizes = {}
            for what, path in urls.items():
                for _ in range(args.workers * 4):  # warm every worker's cache
                    r = requests.get(base + path, timeout=300, headers=browser)
                r.raise_for_status()
                sizes[what] = (r.headers.get("Content-Encoding", "identity"),
                               int(r.headers.get("Content-Length", len(r.content))))
                if what == "board page" and r.headers.get("ETag"):  # a browser coming back: 304, no body
                    rows.insert(1, ("board page 304", path, (f"If-None-Match: {r.headers['ETag']}",)))
                    sizes["board page 304"] = ("(304)", 0)
            results = {}
            for c in args.clients:  # the URLs one after the other at each load: the same machine state
                for what, path, headers in rows:
                    results[what, c] = wrk(base + path, args.seconds, c, script, headers)
            print(f"\n{'':15} {'bytes sent':>16}  " + "  ".join(f"{f'{c} clients: p50 / p95 ms, req/s':>36}"
                                                              for c in args.clients))
            for what, _, _ in rows:
                cells = []
                for c in args.clients:
                    r = results[what, c]
                    bad = f" ({r['errors']} non-2xx/3xx)" if r["errors"] else ""
                    cells.append(f"{r.get('p50_ms', float('nan')):8.1f} / {r.get('p95_ms', float('nan')):7.1f}, "
                                 f"{r['rps']:7.0f}{bad}")
                enc, sent = sizes[what]
                print(f"{what:15} {sent:>9} {enc:>6}  " + "  ".join(f"{cell:>36}" for cell in cells), flush=True)
            print(f"load average (1, 5, 15 min) after: {os.getloadavg()}")
            for c in args.clients:
                board, static = results["board page", c]["p95_ms"], results["static file", c]["p95_ms"]
                print(f"{c:4} clients: board page p95 {board:7.1f} ms = {board / static:.2f} × the static file's "
                      f"(targets: ≤ 1.5 × at 200 clients, ≤ 100 ms at 20 clients)")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(home, ignore_errors=True)

if __name__ == "__main__":
    main()

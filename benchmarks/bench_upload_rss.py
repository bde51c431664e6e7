"""Upload path and submission page under a real ``arena serve`` on 127.0.0.1 (not a timed test).

Streams a generated 2 GB body (default; --gb) to the API upload route of a real ``arena serve`` process
(a fresh ARENA_HOME and SQLite database), samples the server's RSS from /proc while it runs and prints
the peak (/proc VmHWM, the kernel's high-water mark: it must stay < 100 MB, the body is streamed to
disk in 1 MiB chunks). The body is not a valid image archive, so the server stores it, hashes it, then
refuses it at the archive check (400): the upload path itself is what is measured. Then it requests a
submission page N times (Bearer token) and prints the median and p95 latency.

    python benchmarks/bench_upload_rss.py [--gb 2] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc/<pid>/status."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":")
            vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="upload size in GB (10^9 bytes)")
    ap.add_argument("--requests", type=int, default=200, help="submission page requests for the latency")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="arena-bench-upload-"))
    env = {**os.environ, "ARENA_HOME": str(home), "ARENA_DATABASE_URL": f"sqlite:///{home / 'arena.db'}",
           "ARENA_MAX_UPLOAD_BYTES": str(int(args.gb * 1e9) + 2**20), "ARENA_UPLOAD_RATE": "1000"}
    env.pop("ARENA_SECRET_KEY", None)
    # the task, a user and one finished submission to show
    setup = f"""
import io, sys
sys.path.insert(0, {str(REPO / 'tests')!r})
from arena.config import load_settings
from arena.db import session_scope, upgrade
s = load_settings(); s.ensure_dirs(); upgrade(s.database_url)
from web_helpers import fake_submission, make_task, make_user
with session_scope(s.database_url) as db:
    task = make_task(db, s, n_cases=20)
    user, token = make_user(db, "bench", team="Bench")
    sub = fake_submission(db, s, task, "validation", user)
    print(token, sub.id)
"""
    out = subprocess.run([sys.executable, "-c", setup], env=env, capture_output=True, text=True, check=True).stdout
    token, sub_id = out.split()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "arena.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        base_rss, _ = _rss_mb(server.pid)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(_rss_mb(server.pid)[0])
                time.sleep(0.05)

        threading.Thread(target=sample, daemon=True).start()
        size = int(args.gb * 1e9)
        chunk = os.urandom(1 << 20)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        t0 = time.monotonic()
        conn.putrequest("POST", "/api/v1/tasks/han-oar-22/phases/validation/submissions?label=bench")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            conn.send(part)
            sent += len(part)
        resp = conn.getresponse()
        body = resp.read().decode()
        dt_upload = time.monotonic() - t0
        stop.set()
        rss_now, peak = _rss_mb(server.pid)
        print(f"upload: {size / 1e9:.2f} GB in {dt_upload:.1f} s ({size / 1e6 / dt_upload:.0f} MB/s), "
              f"HTTP {resp.status}: {body.strip()[:100]}")
        print(f"server RSS: at start {base_rss:.1f} MB, sampled max during upload {max(samples):.1f} MB, "
              f"peak (VmHWM) {peak:.1f} MB -> {'OK' if peak < 100 else 'OVER'} the 100 MB budget")
        import requests

        sess = requests.Session()
        sess.headers["Authorization"] = f"Bearer {token}"
        url = f"http://127.0.0.1:{port}/submissions/{sub_id}"
        assert sess.get(url).status_code == 200
        times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            r = sess.get(url)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        times.sort()
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"submission page (20 cases, 2 labels × 2 metrics each): median {statistics.median(times):.1f} ms, "
              f"p95 {p95:.1f} ms over {len(times)} requests; server peak RSS now {_rss_mb(server.pid)[1]:.1f} MB")
    finally:
        server.terminate()
        server.wait(timeout=10)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

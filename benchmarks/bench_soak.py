"""Soak: N real uploads (good, failing and adversarial images, broken archives) through intake and
evaluation by W supervised workers, while faults are injected at random: workers SIGKILLed, containers
killed under the runner, Redis killed and restarted empty. Prints submitted / succeeded / failed with a
reason / stuck / lost and the throughput. Stuck and lost must be 0.

    python benchmarks/bench_soak.py [--submissions 100] [--workers 2] [--seed 0] [--no-faults]
                                    [--database-url postgresql+psycopg://...]

Everything runs on this machine: a private Redis on a free loopback port, a temporary ARENA_HOME, SQLite
unless --database-url is given, the local Docker engine (images: benchmarks/tiny_images.py).
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import random
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import tiny_images  # noqa: E402

MIX = {"good": 50, "fail": 12, "sleeper": 8, "bomb": 6, "forkbomb": 6, "wrong": 8, "junk": 5, "traversal": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own (no persistence) that the fault injector may kill and restart empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            r = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Supervisor:
    """Keeps W `arena worker` processes running (as systemd's Restart=always would)."""

    def __init__(self, n: int, env: dict[str, str], log_dir: Path) -> None:
        self.n, self.env, self.log_dir = n, env, log_dir
        self.procs: list[subprocess.Popen | None] = [None] * n
        self.restarts = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _start(self, i: int) -> None:
        log = open(self.log_dir / f"worker-{i}.log", "a")
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "arena.cli", "worker"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def run(self) -> None:
        for i in range(self.n):
            self._start(i)
        while not self.stop.wait(1.0):
            with self.lock:
                for i, p in enumerate(self.procs):
                    if p is not None and p.poll() is not None:
                        self.restarts += 1
                        self._start(i)

    def kill_one(self, rng: random.Random) -> None:
        with self.lock:
            p = rng.choice([p for p in self.procs if p is not None])
            subprocess.run(["pkill", "-KILL", "-s", str(p.pid)], check=False)

    def shutdown(self) -> None:
        self.stop.set()
        with self.lock:
            for p in self.procs:
                if p is not None and p.poll() is None:
                    subprocess.run(["pkill", "-TERM", "-s", str(p.pid)], check=False)
            for p in self.procs:
                if p is None:
                    continue
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    subprocess.run(["pkill", "-KILL", "-s", str(p.pid)], check=False)
                    p.wait()


def broken_archives(d: Path) -> dict[str, Path]:
    junk = d / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    trav = d / "traversal.tar"
    with tarfile.open(trav, "w") as tar:
        info = tarfile.TarInfo("../../etc/cron.d/evil")
        data = b"* * * * * root id\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return {"junk": junk, "traversal": trav}


def soak_task(tmp: Path) -> Path:
    """han-oar-22 with short case limits and a quota that fits the soak."""
    import yaml

    spec = yaml.safe_load((REPO / "tasks" / "han-oar-22" / "task.yaml").read_text())
    spec["resources"]["time_per_case_s"] = 5
    for ph in spec["phases"]:
        ph["submission_limit"] = 1000
    spec["slug"] = "soak"
    d = tmp / "soak"
    d.mkdir()
    (d / "task.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-faults", action="store_true")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--deadline-min", type=float, default=30.0)
    args = ap.parse_args()
    if not tiny_images.available():
        sys.exit("needs /bin/busybox (apt-get install busybox-static) and docker")
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="arena-soak-"))
    redis = PrivateRedis()
    redis.start()
    env = {**os.environ, "ARENA_HOME": str(tmp / "home"), "ARENA_REDIS_URL": redis.url,
           "ARENA_QUEUE": f"soak-{uuid.uuid4().hex[:6]}", "ARENA_HEARTBEAT_S": "1", "ARENA_STALE_AFTER_S": "8",
           "ARENA_DATABASE_URL": args.database_url or f"sqlite:///{tmp / 'home' / 'arena.db'}"}
    os.environ.update(env)
    from sqlalchemy import func, select

    from arena.config import load_settings
    from arena.db import session_scope, upgrade
    from arena.lifecycle import SubmissionStatus
    from arena.models import CaseResult, Evaluation, Submission, User
    from arena.runner.jobs import enqueue_intake
    from arena.submissions.intake import UploadError, create_submission, store_upload
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    broken = broken_archives(tmp)
    with session_scope(settings.database_url) as s:
        task = upsert_task(s, soak_task(tmp))
        load_demo_cases(s, settings, task, 4)  # 2 validation cases
        slug = task.slug
        for t in range(20):
            create_user(s, f"soak{t}", team=f"Soak team {t}")
    pool = [k for k, n in MIX.items() for _ in range(n)]
    rng.shuffle(pool)
    kinds = (pool * (args.submissions // len(pool) + 1))[:args.submissions]

    from tqdm import tqdm

    (tmp / "images").mkdir()
    uploads = []
    for i, kind in enumerate(tqdm(kinds, desc="building images", unit="img")):
        if kind in broken:
            uploads.append(broken[kind])
        else:  # a distinct image per submission (the same image twice in a phase is refused as a duplicate)
            tag = tiny_images.build(kind, variant=f"soak{i}")
            uploads.append(tiny_images.save(tag, tmp / "images" / f"{i}-{kind}.tar"))
            subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)

    sup = Supervisor(args.workers, env, tmp)
    threading.Thread(target=sup.run, daemon=True).start()
    faults: collections.Counter[str] = collections.Counter()
    stop_faults = threading.Event()

    def injector() -> None:
        import docker

        client = docker.from_env()
        while not stop_faults.wait(rng.uniform(4, 12)):
            fault = rng.choice(["kill-worker", "kill-worker", "kill-container", "restart-redis"])
            if fault == "kill-worker":
                sup.kill_one(rng)
            elif fault == "kill-container":
                running = client.containers.list(filters={"label": "arena.managed", "status": "running"})
                if not running:
                    continue
                try:
                    rng.choice(running).kill()
                except docker.errors.APIError:
                    continue
            else:
                redis.kill()
                redis.start()
            faults[fault] += 1

    t0 = time.monotonic()
    submitted: dict[int, str] = {}
    refused: list[str] = []
    for i, kind in enumerate(tqdm(kinds, desc="uploading", unit="sub")):
        with session_scope(settings.database_url) as s:
            user = s.scalar(select(User).where(User.name == f"soak{i % 20}"))
            with open(uploads[i], "rb") as f:
                upload = store_upload(f, settings)
            try:
                sub = create_submission(s, slug, "validation", user, upload, upload_name=f"{kind}.tar",
                                        label=kind, settings=settings)
            except UploadError as e:  # refused at upload (e.g. a traversal archive): counted, nothing stored
                upload.path.unlink(missing_ok=True)
                refused.append(f"{kind}: {e}")
                continue
            sub_id = sub.id
        submitted[sub_id] = kind
        for attempt in range(20):  # Redis may be down for a moment (the injector): retry the enqueue
            try:
                enqueue_intake(settings, sub_id)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.5)
        if i == 10 and not args.no_faults:
            threading.Thread(target=injector, daemon=True).start()

    def states() -> dict[int, tuple[str, str | None, str | None]]:
        out = {}
        with session_scope(settings.database_url) as s:
            for sub in s.scalars(select(Submission).where(Submission.id.in_(list(submitted)))):
                ev = sub.latest_evaluation
                if sub.status == SubmissionStatus.FAILED:
                    out[sub.id] = ("failed", sub.error, "intake")
                elif ev is None:
                    out[sub.id] = (sub.status.value, None, None)
                else:
                    out[sub.id] = (ev.status.value, ev.error, "evaluation")
        return out

    deadline = time.monotonic() + args.deadline_min * 60
    final = {"succeeded", "failed", "cancelled"}
    with tqdm(total=len(submitted), desc="finished", unit="sub") as bar:
        while time.monotonic() < deadline:
            st = states()
            n_final = sum(v[0] in final for v in st.values())
            bar.update(n_final - bar.n)
            if n_final >= 0.8 * len(submitted):
                stop_faults.set()
            if n_final == len(submitted):
                break
            time.sleep(2)
    stop_faults.set()
    wall = time.monotonic() - t0
    st = states()
    with session_scope(settings.database_url) as s:
        twice = s.execute(select(CaseResult.evaluation_id, CaseResult.case_id, func.count()).group_by(
            CaseResult.evaluation_id, CaseResult.case_id).having(func.count() > 1)).all()
        n_evals = s.scalar(select(func.count(Evaluation.id)))
    sup.shutdown()
    import docker

    left = docker.from_env().containers.list(all=True, filters={"label": "arena.managed"})
    redis.kill()

    succeeded = [i for i, v in st.items() if v[0] == "succeeded"]
    failed = [i for i, v in st.items() if v[0] in ("failed", "cancelled")]
    failed_with_reason = [i for i in failed if st[i][1]]
    stuck = [i for i, v in st.items() if v[0] not in final]
    lost = sorted(set(submitted) - set(st))
    reasons = collections.Counter((submitted[i], (st[i][1] or "")[:70]) for i in failed)
    print()
    print(f"soak: {len(kinds)} uploads ({dict(collections.Counter(kinds))}), {args.workers} workers, "
          f"faults {'off' if args.no_faults else dict(faults)}, worker restarts {sup.restarts}")
    print(f"  refused at upload      {len(refused)}")
    print(f"  submitted              {len(submitted)}")
    print(f"  succeeded              {len(succeeded)}   (by kind: "
          f"{dict(collections.Counter(submitted[i] for i in succeeded))})")
    print(f"  failed with a reason   {len(failed_with_reason)} of {len(failed)} failed")
    for (kind, why), n in reasons.most_common(12):
        print(f"      {n:3d} × {kind:9s} {why}")
    print(f"  stuck                  {len(stuck)}  {[(i, submitted[i], st[i][0]) for i in stuck][:10]}")
    print(f"  lost                   {len(lost)}")
    print(f"  cases recorded twice   {len(twice)}")
    print(f"  containers left        {len(left)}")
    print(f"  evaluations            {n_evals} (re-runs after faults included)")
    print(f"  wall time              {wall:.0f} s; throughput {len(submitted) / wall * 60:.1f} submissions/min")
    ok = not stuck and not lost and not twice and len(failed_with_reason) == len(failed)
    print("RESULT:", "OK (stuck = 0, lost = 0)" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

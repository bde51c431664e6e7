"""Shared set-up for the site-worker test and benchmark (issue 18): real processes — `arena serve`, a
local `arena worker`, `arena site-worker` (optionally in a network namespace, see runner_helpers.Link) —
driven through the real CLI and the real HTTP API, and the checks that the server's store never holds a
site's files and that no participant-visible API answer names a site case."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
TOKEN_RE = re.compile(r"arena-site-[A-Za-z0-9_-]{43}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ARENA_* variable (a site worker must not inherit the server's
    database or Redis settings), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARENA_")}
    env.pop("DOCKER_HOST", None)  # every process drives this machine's engine through its unix socket
    env.update(extra)
    return env


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_site_cases(folder: Path, task_dir: Path, keys: list[str], marker: str) -> dict[str, dict[str, str]]:
    """Synthetic cases of the task (its kind's demo generator, size "small") in the `arena task import-cases`
    layout ``folder/<key>/image.mha`` + ``reference.mha``, each header carrying ``marker`` (a metadata
    field), so that any copy of these files anywhere can be found by a byte search. Returns
    {key: {"image": sha256, "reference": sha256}} of the files as written."""
    import SimpleITK as sitk

    from arena.kinds import kind_for
    from arena.tasks.spec import load_spec

    spec = load_spec(task_dir)
    kind = kind_for(spec)
    sums = {}
    for i, key in enumerate(keys):
        demo = kind.write_demo_case(spec, folder, key, 900 + i, "small")
        for p in (demo.image, demo.reference):
            img = sitk.ReadImage(str(p))
            img.SetMetaData("ArenaSiteMarker", marker)
            sitk.WriteImage(img, str(p), useCompression=False)
            assert marker.encode() in p.read_bytes()
        sums[key] = {"image": sha256_file(demo.image), "reference": sha256_file(demo.reference)}
    return sums


def scan_store(root: Path, sums: set[str], marker: bytes) -> list[str]:
    """Every file under ``root`` whose sha256 is one of ``sums`` or whose bytes contain ``marker``, as
    "path: why" (empty: none). Reads every file in full (the test's stores are small)."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            data = p.read_bytes()
            if hashlib.sha256(data).hexdigest() in sums:
                found.append(f"{p}: a site file (sha256 matches)")
            elif marker in data:
                found.append(f"{p}: holds the site marker")
    return found


class Proc:
    """A long-running process in its own session, its output in ``log``; stopped by PID (its session)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        with open(log, "a") as out:
            self.p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                      cwd=str(REPO))

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.p.pid, sig)

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM to the session, SIGKILL after ``timeout_s``; returns the exit status."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait(timeout=10)
        return self.p.returncode

    def kill(self) -> None:
        """SIGKILL the whole session (the process and anything it started), and reap it."""
        if self.alive():
            self.signal(signal.SIGKILL)
            self.p.wait(timeout=10)


class Server:
    """`arena serve` (gunicorn with ``workers`` processes, as the README runs it) on ``host:port``."""

    def __init__(self, env: dict[str, str], host: str, port: int, log: Path, workers: int = 2) -> None:
        self.env, self.host, self.port, self.log, self.workers = env, host, port, log, workers
        self.url = f"http://{host}:{port}"
        self.proc: Proc | None = None

    def start(self, timeout_s: float = 60) -> None:
        self.proc = Proc([sys.executable, "-m", "arena.cli", "serve", "--host", self.host, "--port", str(self.port),
                          "--workers", str(self.workers)], self.env, self.log)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(f"{self.url}/api/v1/tasks", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"arena serve did not come up at {self.url}:\n{self.proc.text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def arena_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``arena ARGS`` as the organizer types it on the server (the real CLI, in a subprocess)."""
    r = subprocess.run([sys.executable, "-m", "arena.cli", *args], env=env, capture_output=True, text=True,
                       timeout=120, cwd=str(REPO))
    if check and r.returncode:
        raise AssertionError(f"arena {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def issue_site_token(env: dict[str, str], site: str, phases: list[str]) -> str:
    """`arena site token SITE --phase T/P ...`: the token it prints once."""
    args = ["site", "token", site]
    for p in phases:
        args += ["--phase", p]
    out = arena_cli(env, *args).stdout
    m = TOKEN_RE.search(out)
    assert m, f"no arena-site-… token in the output of arena site token:\n{out}"
    return m.group(0)


def site_worker(prefix: list[str], server_url: str, token: str, home: Path, name: str, log: Path,
                queue: str, extra: list[str] | None = None) -> Proc:
    """`arena site-worker` with only its own ARENA_HOME (holding ``site-data/``), the token in its
    environment (not on the command line, where `ps` shows it), and no database or Redis settings."""
    env = clean_env(ARENA_HOME=str(home), ARENA_RUN_DIR=str(home / "runs"), ARENA_SITE_TOKEN=token,
                    ARENA_QUEUE=queue)
    return Proc([*prefix, sys.executable, "-m", "arena.cli", "site-worker", "--server", server_url, "--name", name,
                 *(extra or [])], env, log)


def upload(server_url: str, api_token: str, task: str, phase: str, tarball: Path, label: str) -> int:
    """A participant's upload through the API (the raw `docker save` body); the new submission's id."""
    with open(tarball, "rb") as f:
        r = requests.post(f"{server_url}/api/v1/tasks/{task}/phases/{phase}/submissions", data=f,
                          params={"label": label}, timeout=120,
                          headers={"Authorization": f"Bearer {api_token}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, (r.status_code, r.text)
    body = r.json()
    return int(body.get("id") or body.get("submission_id") or body["submission"]["id"])


def participant_answers(server_url: str, api_token: str | None, task: str, phases: list[str],
                        submission_ids: list[int]) -> dict[str, str]:
    """Every API answer a participant (``api_token``; None: anonymous) can get about ``task``: {path: body}.
    The board pages and CSV as well, which anyone may fetch."""
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    paths = ["/api/v1/me", "/api/v1/tasks", f"/api/v1/tasks/{task}", "/api/v1/submissions",
             f"/api/v1/submissions?task={task}", "/api/v1/evaluations", "/api/v1/openapi.json", f"/tasks/{task}"]
    for p in phases:
        paths += [f"/api/v1/tasks/{task}/leaderboard?phase={p}", f"/tasks/{task}?phase={p}",
                  f"/tasks/{task}/leaderboard.csv?phase={p}"]
    for sid in submission_ids:
        paths += [f"/api/v1/submissions/{sid}", f"/api/v1/submissions/{sid}/results",
                  f"/api/v1/submissions/{sid}/results?format=csv"]
    return {p: requests.get(server_url + p, headers=headers, timeout=30).text for p in paths}


def firewall_namespace(ns: str, server_ip: str, server_port: int) -> None:
    """Inside namespace ``ns``: outbound traffic only to its loopback and to ``server_ip:server_port``
    (the Arena server); everything else is rejected, whatever else listens on the root side (this
    machine's Redis may listen on every interface)."""
    def ipt(*rule: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "iptables", *rule], check=True, capture_output=True)

    ipt("-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
    ipt("-A", "OUTPUT", "-p", "tcp", "-d", server_ip, "--dport", str(server_port), "-j", "ACCEPT")
    ipt("-A", "OUTPUT", "-j", "REJECT")


PROBE = r"""
import socket, sys, json
out = {}
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(port))); out[spec] = "open"
    except OSError as e:
        out[spec] = type(e).__name__
    finally:
        s.close()
print(json.dumps(out))
"""


def probe_ports(prefix: list[str], targets: list[str]) -> dict[str, str]:
    """From the namespace ``prefix`` enters: which of ``host:port`` accept a TCP connection ("open") and
    which do not (the error's name)."""
    import json

    r = subprocess.run([*prefix, sys.executable, "-c", PROBE, *targets], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)

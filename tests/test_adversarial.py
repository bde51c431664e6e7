"""Hostile containers against the sandbox and the case runner.

Each image in ``HOSTILE`` (scripts in ``tests/adversarial/``, built FROM the base image) misbehaves
on purpose and is run through :func:`arena.runner.evaluate.evaluate_case` on one small synthetic case,
with tight limits so the whole file stays fast. Every test checks that the case fails with the expected
failure class and a readable error, and (``host_unharmed``, autouse) that the host is unharmed: no
container and no ``arena-output`` tmpfs left behind, no hostile process alive, host files unchanged,
the work directory removed. The last test runs a well-behaved image and expects good Dice.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from arena.runner.evaluate import evaluate_case, limits_for
from arena.runner.failures import Failure
from arena.runner.sandbox import MANAGED_LABEL

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
HOSTILE_DIR = Path(__file__).parent / "adversarial"
TEST_LABEL = "arena.test"
LISTEN_PORT = 47_123  # a host listener the network probe must not reach

# image name → (ENTRYPOINT, extra Dockerfile lines)
HOSTILE: dict[str, tuple[list[str], str]] = {
    "forkbomb": (["python3", "/adv/forkbomb.py"], ""),
    "memhog": (["python3", "/adv/memhog.py", "heap"], ""),
    "memhog-tmp": (["python3", "/adv/memhog.py", "/tmp"], ""),
    "memhog-shm": (["python3", "/adv/memhog.py", "/dev/shm"], ""),
    "busyloop": (["python3", "/adv/busyloop.py"], ""),
    "ignore-sigterm": (["python3", "/adv/ignore_sigterm.py"], ""),
    "orphan-daemon": (["python3", "/adv/orphan_daemon.py"], ""),
    "bigfile": (["sh", "/adv/bigfile.sh"], ""),
    "smallfiles": (["python3", "/adv/smallfiles.py"], ""),
    "filecount": (["python3", "/adv/filecount.py", "100000"], ""),
    "deepdirs": (["python3", "/adv/deepdirs.py", "deep"], ""),
    "widedirs": (["python3", "/adv/deepdirs.py", "wide"], ""),
    "stdout-flood": (["python3", "/adv/stdout_flood.py"], ""),
    "network": (["python3", "/adv/network.py", str(LISTEN_PORT)], ""),
    "setuid": (["python3", "/adv/setuid.py"],
               "RUN cp /usr/bin/python3.11 /adv/rootpy && chmod 4755 /adv/rootpy"
               " && cp /bin/bash /adv/rootsh && chmod 4755 /adv/rootsh\n"),
    "snoop": (["python3", "/adv/snoop.py"], ""),
    "symlinks": (["sh", "/adv/symlinks.sh"], ""),
    "readonly": (["python3", "/adv/readonly.py"], ""),
    "zombies": (["python3", "/adv/zombies.py"], ""),
    "sleeper": (["sh", "/adv/sleeper.sh"], ""),
    "output-bomb": (["python3", "/adv/output_bomb.py", "1024"], ""),
}

# Small limits so hostile runs end fast; tests override what they probe.
FAST = dict(time_per_case_s=4, memory_mb=256, pids=32, output_mb=8, tmp_mb=32, shm_mb=16)

# cmdline fragments of hostile processes: none may survive its case on the host
HOSTILE_CMDLINES = (b"/adv/", b"sleep\x003600", b"of=/output/big.bin")


def _tag(name: str) -> str:
    return f"arena-test/hostile-{name}:latest"


@pytest.fixture(scope="session")
def hostile_images(docker_engine, base_image, tmp_path_factory) -> dict[str, str]:
    """Build every hostile image (one shared COPY layer; docker's build cache keeps rebuilds cheap)."""
    from arena.images.build import build_image

    ctx = tmp_path_factory.mktemp("hostile-context")
    for f in sorted(HOSTILE_DIR.iterdir()):
        if f.is_file() and f.suffix in (".py", ".sh"):
            shutil.copyfile(f, ctx / f.name)
            (ctx / f.name).chmod(0o644)
    (ctx / ".dockerignore").write_text("Dockerfile.*\n")
    for name, (entrypoint, extra) in HOSTILE.items():
        (ctx / f"Dockerfile.{name}").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY *.py *.sh /adv/\n" + extra
            + f"LABEL arena.hostile={name}\nENTRYPOINT {json.dumps(entrypoint)}\n")
    for name in HOSTILE:
        try:
            previous = docker_engine.images.get(_tag(name)).id
        except docker.errors.ImageNotFound:
            previous = None
        new = build_image(str(ctx), _tag(name), base_image, log=lambda line: None, dockerfile=f"Dockerfile.{name}",
                          client=docker_engine)
        if previous and previous != new:  # the scripts changed: drop the superseded (now untagged) image
            try:
                docker_engine.images.remove(previous)
            except docker.errors.APIError:
                pass
    return {name: _tag(name) for name in HOSTILE}


@pytest.fixture(scope="session")
def case(tmp_path_factory) -> tuple[Path, Path]:
    from arena.datasets.phantom import write_case

    meta = write_case(tmp_path_factory.mktemp("adv-case"), "adv-000", seed=1, size="small")
    return Path(meta["image"]), Path(meta["reference"])


@pytest.fixture(scope="session")
def spec():
    from arena.tasks.spec import load_spec

    return load_spec(REPO / "tasks" / "han-oar-22")


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _hostile_processes() -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if any(frag in cmd for frag in HOSTILE_CMDLINES):
            text = cmd.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{d.name}: {text[:80]}")
    return found


def _zombie_pythons() -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                st = (d / "stat").read_text()
            except OSError:
                continue
            if "(python3" in st and st.rsplit(")", 1)[1].split()[0] == "Z":
                n += 1
    return n


@pytest.fixture(autouse=True)
def host_unharmed(docker_engine, tmp_path):
    """After each hostile run: nothing left behind, host files untouched."""
    watched = ("/etc/shadow", "/etc/passwd", "/etc/hosts", "/etc/resolv.conf")
    before = {p: _digest(p) for p in watched}
    zombies = _zombie_pythons()
    yield
    left = docker_engine.containers.list(all=True, filters={"label": [MANAGED_LABEL, f"{TEST_LABEL}=adversarial"]})
    assert not left, f"containers left behind: {[c.name for c in left]}"
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines()
              if line.startswith("arena-output ") and str(tmp_path) in line]
    assert not mounts, f"output tmpfs left mounted: {mounts}"
    assert not _hostile_processes(), "hostile processes alive on the host"
    assert _zombie_pythons() <= zombies, "zombie python processes left on the host"
    assert {p: _digest(p) for p in watched} == before, "a host file changed"
    assert not (tmp_path / "work").exists(), "the case's work directory was not removed"


def run_hostile(engine, spec, image: str, case, tmp_path: Path, **resources):
    """evaluate_case with FAST limits (plus ``resources``); returns (outcome, wall seconds)."""
    r = spec.resources.model_copy(update={**FAST, **resources})
    s = spec.model_copy(update={"resources": r})
    t0 = time.monotonic()
    out = evaluate_case(engine, s, image, "adv-000", case[0], case[1], work_dir=tmp_path / "work",
                        results_dir=tmp_path / "results", limits=limits_for(s), labels={TEST_LABEL: "adversarial"})
    wall = time.monotonic() - t0
    print(f"{image}: ok={out.ok} failure={out.failure} exit={out.exit_code} runtime={out.runtime_s} "
          f"wall={wall:.1f}s error={out.error!r}")
    return out, wall


def _failed_empty(out) -> None:
    """A failed case is scored as an empty prediction: every organ in the reference counts as missed."""
    assert not out.ok and out.error and out.failure is not None
    assert out.scores and all(v["dice"] in (0.0, None) for v in out.scores.values())


def _report(out) -> dict:
    lines = [line for line in out.log_tail.splitlines() if line.startswith("{")]
    assert lines, f"the probe printed no JSON report: {out.log_tail[-500:]!r}"
    return json.loads(lines[-1])


def _tree_bytes(root: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(root) for f in fs)


# ---------------------------------------------------------------- processes and CPU

def test_fork_bomb(docker_engine, hostile_images, spec, case, tmp_path):
    out, wall = run_hostile(docker_engine, spec, hostile_images["forkbomb"], case, tmp_path, pids=32)
    _failed_empty(out)
    assert wall < FAST["time_per_case_s"] + 15
    # The bomb never exits by itself: it is killed at the case timeout; the pids limit held meanwhile.
    # The sandbox samples the container's pids cgroup (pids.events "max") and names the cause.
    assert out.failure == Failure.PIDS_EXHAUSTED, out.error
    assert out.error.startswith("the pids limit (32 processes and threads) was hit")
    assert out.error.endswith("then timed out after 4 s (killed)")


def test_zombie_storm(docker_engine, hostile_images, spec, case, tmp_path):
    out, wall = run_hostile(docker_engine, spec, hostile_images["zombies"], case, tmp_path, pids=32)
    _failed_empty(out)
    assert wall < 15 and out.exit_code == 1
    # Unreaped children fill the pids limit; fork then fails (BlockingIOError) and the script dies.
    assert out.failure == Failure.PIDS_EXHAUSTED, out.error
    assert out.error.startswith("the pids limit (32 processes and threads) was hit: the kernel refused a fork")
    assert "then the container exited with code 1: BlockingIOError" in out.error


def test_busy_loop_past_timeout(docker_engine, hostile_images, spec, case, tmp_path):
    out, wall = run_hostile(docker_engine, spec, hostile_images["busyloop"], case, tmp_path, time_per_case_s=3)
    _failed_empty(out)
    assert out.failure == Failure.TIMEOUT and out.error == "timed out after 3 s (killed)"
    assert 3 <= out.runtime_s < 8 and wall < 15


def test_ignores_sigterm(docker_engine, hostile_images, spec, case, tmp_path):
    out, _ = run_hostile(docker_engine, spec, hostile_images["ignore-sigterm"], case, tmp_path, time_per_case_s=3)
    _failed_empty(out)
    assert out.failure == Failure.TIMEOUT and "timed out after 3 s" in out.error
    assert out.runtime_s < 8, "the kill must not wait for a SIGTERM grace period"
    assert "ignoring SIGTERM" in out.log_tail


def test_sleep_past_case_timeout(docker_engine, hostile_images, spec, case, tmp_path):
    out, _ = run_hostile(docker_engine, spec, hostile_images["sleeper"], case, tmp_path, time_per_case_s=2)
    _failed_empty(out)
    assert out.failure == Failure.TIMEOUT and out.error == "timed out after 2 s (killed)"
    assert out.runtime_s < 7 and "sleeping for an hour" in out.log_tail


def test_orphaned_daemon_dies_with_the_case(docker_engine, hostile_images, spec, case, tmp_path):
    # The main process exits 0 at once; a double-forked, SIGTERM-ignoring daemon must not outlive it
    # (PID 1 is docker-init: when the main process ends the whole PID namespace is killed).
    out, _ = run_hostile(docker_engine, spec, hostile_images["orphan-daemon"], case, tmp_path, time_per_case_s=20)
    _failed_empty(out)
    assert out.exit_code == 0 and out.runtime_s < 5
    assert out.failure == Failure.INVALID_OUTPUT and out.error.startswith("no output")
    log = tmp_path / "results" / "daemon.txt"
    if log.exists():  # collected once, then never written again
        size = log.stat().st_size
        time.sleep(0.3)
        assert log.stat().st_size == size


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize("variant, resources", [
    ("memhog", {}),
    ("memhog-tmp", {"tmp_mb": 1024}),  # tmpfs pages are charged to the container's memory limit
    ("memhog-shm", {"shm_mb": 1024}),
])
def test_memory_hog(docker_engine, hostile_images, spec, case, tmp_path, variant, resources):
    out, wall = run_hostile(docker_engine, spec, hostile_images[variant], case, tmp_path, memory_mb=128,
                            time_per_case_s=20, **resources)
    _failed_empty(out)
    assert out.failure == Failure.OUT_OF_MEMORY, out.error
    assert out.error == "out of memory (limit 128 MB; killed by the kernel)"
    assert wall < 15


# ---------------------------------------------------------------- disk

def test_disk_filler_one_big_file(docker_engine, hostile_images, spec, case, tmp_path):
    out, wall = run_hostile(docker_engine, spec, hostile_images["bigfile"], case, tmp_path, output_mb=8)
    _failed_empty(out)
    assert out.failure == Failure.OUTPUT_TOO_LARGE, out.error
    assert out.error.startswith("output too large: /output is limited to 8 MB")
    assert out.exit_code == 153  # SIGXFSZ from the per-file ulimit
    assert _tree_bytes(tmp_path / "results") <= 8 * 2**20 and wall < 15


def test_disk_filler_many_small_files(docker_engine, hostile_images, spec, case, tmp_path):
    out, wall = run_hostile(docker_engine, spec, hostile_images["smallfiles"], case, tmp_path, output_mb=8)
    _failed_empty(out)
    assert out.failure == Failure.OUTPUT_TOO_LARGE, out.error
    assert out.error.startswith("output too large: /output is limited to 8 MB")
    assert "No space left on device" in out.error
    assert _tree_bytes(tmp_path / "results") <= 8 * 2**20 and wall < 15


def test_file_count_bomb(docker_engine, hostile_images, spec, case, tmp_path):
    # 100,000 empty files: no bytes, so the tmpfs size cap does not stop them; the collector's count cap does.
    out, _ = run_hostile(docker_engine, spec, hostile_images["filecount"], case, tmp_path, time_per_case_s=30)
    assert out.exit_code == 0, out.log_tail[-500:]
    _failed_empty(out)
    assert out.failure == Failure.OUTPUT_TOO_LARGE, out.error
    assert out.error == "more than 1000 files in /output"
    assert sum(len(fs) for _, _, fs in os.walk(tmp_path / "results")) <= 1000


@pytest.mark.parametrize("variant, message", [
    # a chain 6,000 levels deep: paths far past PATH_MAX, past Python's recursion limit
    ("deepdirs", "/output nests directories more than 32 levels deep"),
    # 30,000 empty directories: no bytes and no files, so neither the tmpfs size nor the file cap sees them
    ("widedirs", "/output holds more than 10000 entries (files, directories and links)"),
])
def test_deep_and_wide_directories(docker_engine, hostile_images, spec, case, tmp_path, variant, message):
    # The collector must refuse with a reason, not crash (RecursionError / ENAMETOOLONG) or walk forever.
    # As root the /output tmpfs also caps inodes (20000): the wide variant then hits ENOSPC in the container.
    out, wall = run_hostile(docker_engine, spec, hostile_images[variant], case, tmp_path, time_per_case_s=30)
    _failed_empty(out)
    assert out.failure == Failure.OUTPUT_TOO_LARGE, out.error
    if out.exit_code == 0:
        assert out.error == message or out.error.startswith(message + " ("), out.error
    else:
        assert variant == "widedirs" and "No space left on device" in out.error, out.error
    assert wall < 20


# ---------------------------------------------------------------- logs

def _dockerd_cpu_s() -> float | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "dockerd":
                    f = (d / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                continue
    return None


def test_stdout_flood(docker_engine, hostile_images, spec, case, tmp_path):
    cpu0 = _dockerd_cpu_s()
    out, wall = run_hostile(docker_engine, spec, hostile_images["stdout-flood"], case, tmp_path, time_per_case_s=60)
    cpu1 = _dockerd_cpu_s()
    print(f"200 MB to stdout: {wall:.1f} s wall, dockerd {None if cpu0 is None else cpu1 - cpu0:.1f} CPU-s")
    _failed_empty(out)
    assert out.exit_code == 0 and out.failure == Failure.INVALID_OUTPUT and out.error.startswith("no output")
    assert len(out.log_tail.encode()) <= 70 * 1024  # only a tail is kept
    assert "flood done" in out.log_tail or out.log_tail.rstrip().endswith("x")
    assert wall < 40


# ---------------------------------------------------------------- reach and privilege

@pytest.fixture
def host_listener():
    """A TCP listener on all host interfaces; counts connections."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", LISTEN_PORT))
    srv.listen(16)
    srv.settimeout(0.2)
    accepted: list[tuple] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
                accepted.append(addr)
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield accepted
    stop.set()
    t.join(2)
    srv.close()


def test_network_unreachable(docker_engine, hostile_images, spec, case, tmp_path, host_listener):
    out, _ = run_hostile(docker_engine, spec, hostile_images["network"], case, tmp_path, time_per_case_s=60)
    _failed_empty(out)
    assert out.failure == Failure.INVALID_OUTPUT
    r = _report(out)
    assert r.pop("interfaces") == ["lo"]
    reached = {k: v for k, v in r.items() if v["ok"]}
    assert not reached, f"reached from inside the sandbox: {reached}"
    assert "Operation not permitted" in r["raw icmp"]["error"] and "Operation not permitted" in r["packet socket"]["error"]
    assert "unreachable" in r[f"tcp 172.17.0.1:{LISTEN_PORT}"]["error"]
    assert "refused" in r["tcp 127.0.0.1:6379"]["error"]  # the container's own loopback, not the host's Redis
    assert not host_listener, f"the host listener was reached: {host_listener}"


def test_setuid_binary_gives_no_root(docker_engine, hostile_images, spec, case, tmp_path):
    out, _ = run_hostile(docker_engine, spec, hostile_images["setuid"], case, tmp_path, time_per_case_s=30)
    _failed_empty(out)
    assert out.failure == Failure.INVALID_OUTPUT
    r = _report(out)
    assert r["rootpy_owner"] == 0 and int(r["rootpy_mode"], 8) & stat.S_ISUID  # the bit is really there
    assert r["self"] == {"uid": 65534, "euid": 65534}
    assert r["rootpy"]["euid"] == 65534 and r["rootpy"]["uid"] == 65534
    assert int(r["rootpy"]["CapEff"], 16) == 0 and int(r["rootpy"]["CapPrm"], 16) == 0 and r["rootpy"]["NoNewPrivs"] == "1"
    assert "PermissionError" in r["setuid0"]
    assert r["rootsh"] == ["65534", "65534"]


def test_no_secrets_or_host_paths_visible(docker_engine, hostile_images, spec, case, tmp_path, monkeypatch):
    canary = uuid.uuid4().hex
    monkeypatch.setenv("ARENA_CANARY_SECRET", canary)  # in the worker's environment: must not travel
    monkeypatch.setenv("DOCKER_CANARY", canary)
    out, _ = run_hostile(docker_engine, spec, hostile_images["snoop"], case, tmp_path, time_per_case_s=30)
    _failed_empty(out)
    assert out.failure == Failure.INVALID_OUTPUT
    assert canary not in out.log_tail
    r = _report(out)
    envs = [r["environ_self"]] + [e["data"] for e in r["environ_all"].values() if e["ok"]]
    assert r["environ_pid1"]["ok"]  # readable: so nothing secret may ever be passed in the environment
    envs.append(r["environ_pid1"]["data"])
    for env in envs:
        bad = [k for k in env if k.startswith(("ARENA_", "DOCKER_")) or "PROXY" in k.upper()]
        assert not bad, f"the container sees {bad}"
    # the image has no /etc/shadow: a readable one would be the host's
    for path in ("/etc/shadow", "/etc/gshadow", "/root/.docker/config.json", "/proc/kcore", "/dev/mem",
                 "/proc/1/root/etc/shadow", "/var/run/docker.sock", "/run/secrets", "/host/etc/shadow", "/work",
                 "/proc/1/mem", "/sys/firmware/dmi/tables/DMI"):
        assert not r[path]["ok"], f"{path} is readable inside: {r[path]['data'][:80]!r}"
    assert "docker.sock" not in r["mountinfo"]["data"]
    assert not {"mem", "kmem", "sda", "vda", "nvme0"} & set(r["devices"])


def test_symlinks_in_output_not_followed(docker_engine, hostile_images, spec, case, tmp_path):
    out, _ = run_hostile(docker_engine, spec, hostile_images["symlinks"], case, tmp_path)
    _failed_empty(out)
    assert out.exit_code == 0 and out.failure == Failure.INVALID_OUTPUT
    # what was skipped is in the log; the error names the missing output
    assert out.error.startswith("no output: expected one .mha file in /output/images/oar-segmentation/")
    assert "not collected:" in out.log_tail and "output.mha (symlink)" in out.log_tail
    assert "fifo.mha (not a regular file)" in out.log_tail
    results = tmp_path / "results"
    host_secrets = [Path("/etc/shadow").read_bytes(), Path("/etc/passwd").read_bytes()]
    for dirpath, dirnames, filenames in os.walk(results):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            assert not p.is_symlink() and (p.is_dir() or p.is_file()), f"{p} collected as a link or special file"
            if p.is_file():
                assert p.read_bytes() not in host_secrets, f"{p} is a copy of a host file"


def test_read_only_input_and_root(docker_engine, hostile_images, spec, case, tmp_path):
    digest = _digest(str(case[0]))
    out, _ = run_hostile(docker_engine, spec, hostile_images["readonly"], case, tmp_path, time_per_case_s=30)
    _failed_empty(out)
    assert out.failure == Failure.INVALID_OUTPUT
    r = _report(out)
    for k in ("/input/new", "/input/inputs.json", "/input image overwrite", "/input image unlink", "/input chmod",
              "/new", "/etc/passwd", "/usr/bin/python3 replace"):
        assert r[k] == "EROFS", (k, r[k])
    assert r["/tmp"] == "WROTE" and r["/dev/shm"] == "WROTE"  # scratch space stays usable
    assert r["exec from /tmp"] != 0  # /tmp is noexec
    assert r["mount(2) remount /"] == "EPERM"
    assert _digest(str(case[0])) == digest


# ---------------------------------------------------------------- output bombs on the host side

def test_output_header_bomb(docker_engine, hostile_images, spec, case, tmp_path):
    # ~1 MB of zlib-compressed zeros whose MetaImage header claims 1024^3 voxels (1 GiB). The worker
    # must refuse it from the header (size differs from the case image) without inflating it.
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, _ = run_hostile(docker_engine, spec, hostile_images["output-bomb"], case, tmp_path, time_per_case_s=60,
                            memory_mb=512)
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"worker peak RSS grew by {grew_mb:.0f} MB")
    _failed_empty(out)
    assert out.failure == Failure.INVALID_OUTPUT and "size (1024, 1024, 1024) differs" in out.error
    assert grew_mb < 256, f"the worker inflated the output bomb ({grew_mb:.0f} MB peak RSS growth)"


# ---------------------------------------------------------------- afterwards: a good image still works

def test_zz_well_behaved_image_still_scores(docker_engine, base_image, spec, case, tmp_path):
    from arena.images.build import build_image

    tag = "arena-test/threshold:adversarial"
    build_image(str(REPO / "examples" / "threshold-segmenter"), tag, base_image, log=lambda line: None,
                client=docker_engine)
    out, _ = run_hostile(docker_engine, spec, tag, case, tmp_path, time_per_case_s=120, memory_mb=2048,
                            pids=64, output_mb=64, tmp_mb=64)
    assert out.ok, (out.error, out.log_tail[-2000:])
    assert out.failure is None and out.exit_code == 0
    names = {lab: s.name for lab, s in spec.labels.items()}
    dice = {names[lab]: v["dice"] for lab, v in out.scores.items()}
    assert dice["Eye_L"] > 0.5 and dice["Eye_R"] > 0.5 and dice["Mandible_L"] > 0.5 and dice["Mandible_R"] > 0.5, dice

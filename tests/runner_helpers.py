"""Shared set-up for tests that run real workers: a tiny image that writes an empty, valid output after
a delay, and validated submissions of it on han-oar-22 demo cases; and the ≈2 MB busybox-static images
(no base image, no registry) that benchmarks/tiny_images.py re-exports for the benchmarks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from arena.lifecycle import SubmissionStatus

REPO = Path(__file__).resolve().parents[1]

WRITER = r"""
import os, time, SimpleITK as sitk
d = "/input/images/ct"; img = sitk.ReadImage(os.path.join(d, os.listdir(d)[0]))
time.sleep(float(os.environ.get("DELAY", "0")))
out = sitk.Image(img.GetSize(), sitk.sitkUInt8); out.CopyInformation(img)
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
sitk.WriteImage(out, "/output/images/oar-segmentation/out.mha")
"""


def build_writer_image(tmp_path: Path, base_image: str, delay_s: float, tag: str) -> str:
    """An image that waits ``delay_s`` seconds per case, then writes an all-background label map."""
    from arena.images.build import build_image

    d = tmp_path / "writer-image"
    d.mkdir()
    (d / "run.py").write_text(WRITER)
    (d / "Dockerfile").write_text(f'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nENV DELAY={delay_s}\nCOPY run.py /run.py\n'
                                  'ENTRYPOINT ["python3", "/run.py"]\n')
    return build_image(str(d), tag, base_image, log=lambda s: None)


def validated_submissions(db, settings, image_id: str, n_submissions: int, n_validation_cases: int) -> list[int]:
    """han-oar-22 with demo cases and ``n_submissions`` validated submissions of ``image_id`` (one team each)."""
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 2 * n_validation_cases)  # round-robin over the two phases
    ids = []
    for i in range(n_submissions):
        user, _ = create_user(db, f"u{i}", team=f"Team {i}")
        sub = create_submission(db, "han-oar-22", "validation", user,
                                StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1))
        sub.set_status(SubmissionStatus.VALIDATED)
        sub.image_id = image_id
        ids.append(sub.id)
    db.commit()
    return ids


def wait_for_case_container(docker_engine, evaluation_id: int, timeout_s: float = 90) -> None:
    """Block until a container of the evaluation runs (a case has started); fail after ``timeout_s``.
    Only this test's containers count: evaluation IDs repeat across test databases sharing one engine, so
    the test's queue (ARENA_QUEUE, set by the arena_env fixture) is matched too."""
    import os
    import time

    label = [f"arena.evaluation={evaluation_id}"]
    if os.environ.get("ARENA_QUEUE"):
        label.append(f"arena.queue={os.environ['ARENA_QUEUE']}")
    deadline = time.monotonic() + timeout_s
    while not docker_engine.containers.list(filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_engine.containers.list(filters={"label": label}), "the first case never started"


def wait_finished(db, evaluation_id: int, timeout_s: float = 180):
    """The evaluation once it has finished (or as it is after ``timeout_s``)."""
    import time

    from arena.models import Evaluation

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        db.expire_all()
        if db.get(Evaluation, evaluation_id).status.finished:
            break
        time.sleep(0.5)
    return db.get(Evaluation, evaluation_id)


def case_counts(db, evaluation_id: int) -> list[int]:
    """How many result rows each case of the evaluation has (each must be 1: no case recorded twice)."""
    from sqlalchemy import func, select

    from arena.models import CaseResult

    return [n for _, n in db.execute(select(CaseResult.case_id, func.count()).where(
        CaseResult.evaluation_id == evaluation_id).group_by(CaseResult.case_id)).all()]


# -- tiny images ------------------------------------------------------------------------------------
# Tiny (≈2 MB) algorithm images made from Debian's static busybox, for benchmarks that push many real
# uploads through intake and for tests on an engine without Arena's base image (a private dockerd).
# Behaviours (ENTRYPOINT scripts, run as uid 1000 under the normal sandbox):
# - ``good``: writes an all-background label map with the input's exact geometry (valid, scored; the .mha
#   header is copied from the input with grep/sed, the voxels come from /dev/zero);
# - ``slow``: sleeps $SLOW_S seconds (default 5), then behaves like ``good``;
# - ``fail``: prints an error and exits 3;
# - ``sleeper``: sleeps past any case time limit;
# - ``bomb``: fills /output until the size cap stops it;
# - ``forkbomb``: forks until the pids limit stops it;
# - ``wrong``: writes a label map of the wrong size;
# - ``burn``: keeps one core busy for $BURN_S seconds (default 3), then behaves like ``good``.
# - ``exitcode``: sleeps $SLOW_S seconds (default 1), then exits with a function of its hidden input
#   (voxel count % 250 + 2): the covert channel of issue 17, finding 2.

BUSYBOX = Path("/bin/busybox")

GOOD = r"""
f=$(ls /input/images/ct/* | head -n 1)
mkdir -p /output/images/oar-segmentation
o=/output/images/oar-segmentation/out.mha
{
  echo "ObjectType = Image"; echo "NDims = 3"; echo "BinaryData = True"; echo "BinaryDataByteOrderMSB = False"
  echo "CompressedData = False"
  grep -a -m 1 '^TransformMatrix = ' "$f"; grep -a -m 1 '^Offset = ' "$f"; grep -a -m 1 '^ElementSpacing = ' "$f"
  grep -a -m 1 '^DimSize = ' "$f"; echo "ElementType = MET_UCHAR"; echo "ElementDataFile = LOCAL"
} > "$o"
set -- $(grep -a -m 1 '^DimSize = ' "$f" | cut -d ' ' -f 3-)
head -c $(($1 * $2 * $3)) /dev/zero >> "$o"
"""

BURN = r"""
end=$(( $(date +%s) + ${BURN_S:-3} ))
while [ "$(date +%s)" -lt "$end" ]; do i=0; while [ $i -lt 2000 ]; do i=$((i + 1)); done; done
"""

SCRIPTS = {
    "good": GOOD,
    "burn": BURN + GOOD,
    "fail": 'echo "model weights not found: /opt/ml/model/weights.pt" >&2\nexit 3\n',
    "model": "cat /opt/ml/model/weights.txt\n" + GOOD,  # reads the submission's model archive
    "sleeper": "sleep 100000\n",
    "slow": 'sleep "${SLOW_S:-5}"\n' + GOOD,
    "exitcode": 'sleep "${SLOW_S:-1}"\nf=$(ls /input/images/ct/* | head -n 1)\n'
                "set -- $(grep -a -m 1 '^DimSize = ' \"$f\" | cut -d ' ' -f 3-)\nexit $(( $1 * $2 * $3 % 250 + 2 ))\n",
    "bomb": "mkdir -p /output/images/oar-segmentation\nwhile :; do head -c 1048576 /dev/zero >> /output/junk; done\n",
    "forkbomb": "f() { f | f & }\nf\nsleep 30\n",
    "wrong": GOOD.replace('head -c $(($1 * $2 * $3)) /dev/zero >> "$o"',
                          'head -c 100 /dev/zero >> "$o"').replace(
        "grep -a -m 1 '^DimSize = ' \"$f\"; echo", "echo 'DimSize = 10 10 1'; echo"),
}


def tiny_images_available() -> bool:
    """A static busybox (Debian's busybox-static: the image has no libc) and a docker CLI."""
    if not BUSYBOX.is_file() or shutil.which("docker") is None:
        return False
    r = subprocess.run(["ldd", str(BUSYBOX)], capture_output=True, text=True)
    return r.returncode != 0 or "not a dynamic executable" in (r.stdout + r.stderr)


def _rootfs_tar(script: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "input", "output", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for name in ("sh", "ls", "head", "grep", "cut", "mkdir", "sleep", "echo", "cat", "date"):
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        data = ("#!/bin/sh\nset -e\n" + script).encode()
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        passwd = b"root:x:0:0::/:/bin/sh\nalgo:x:1000:1000::/tmp:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def build_tiny_image(kind: str, tag: str | None = None, variant: str = "", docker_host: str | None = None,
                     env: dict[str, str] | None = None) -> str:
    """Import the ``kind`` image into the local engine (or the one at ``docker_host``); returns its tag.
    A ``variant`` string makes a distinct image (another image ID) with the same behaviour: Arena
    refuses the same image twice. ``env``: extra ENV lines baked in (e.g. ``{"SLOW_S": "8"}``)."""
    tag = tag or f"arena-bench/tiny-{kind}:{variant or 'latest'}"
    changes = ["--change", 'ENTRYPOINT ["/bin/sh", "/run.sh"]', "--change", "USER 1000", "--change", "ENV PATH=/bin",
               "--change", f"LABEL arena.variant={variant or '-'}"]
    for k, v in (env or {}).items():
        changes += ["--change", f"ENV {k}={v}"]
    run_env = {**os.environ, "DOCKER_HOST": docker_host} if docker_host else None
    subprocess.run(["docker", "import", *changes, "-", tag], input=_rootfs_tar(SCRIPTS[kind]), check=True,
                   capture_output=True, env=run_env)
    return tag


def save_image(tag: str, path: Path) -> Path:
    """``docker save`` the image to ``path`` (what a participant uploads)."""
    with open(path, "wb") as f:
        subprocess.run(["docker", "save", tag], stdout=f, check=True)
    return path


def build_all_tiny_images(out_dir: Path) -> dict[str, Path]:
    """Every behaviour as a saved tarball in ``out_dir``: {kind: tarball}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {kind: save_image(build_tiny_image(kind), out_dir / f"{kind}.tar") for kind in SCRIPTS}


# -- private networks -------------------------------------------------------------------------------

def free_private_slash30(base: str = "10.213.0.0/16"):
    """A /30 of ``base`` that no interface address or route of this machine touches (only the default
    route would cover it): for a bridge or a veth pair a test creates, so that no traffic can leave the
    machine. Picked at random among the free ones (tests on the same machine rarely collide)."""
    import ipaddress
    import random

    used = []
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for word in out.split():
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if net.version == 4 and net.prefixlen > 0:
                used.append(net)
    candidates = list(ipaddress.ip_network(base).subnets(new_prefix=30))
    random.shuffle(candidates)
    for net in candidates:
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free /30 in {base}")


class Link:
    """Another host on this machine: a network namespace and a veth pair joining it to the root namespace,
    ``root_ip`` on the root side, ``ns_ip`` in the namespace, a /30 of their own that nothing else routes
    (:func:`free_private_slash30`). ``enter`` prefixes a command to run it in the namespace.

    Only the network is another host's: ``nsenter --net``, not ``ip netns exec``, which also gives the
    command a mount namespace of its own, so the /output tmpfs a worker mounts would be invisible to
    dockerd (a real worker host shares its mounts with its engine). Unix sockets are not namespaced, so
    a process in the namespace still drives this machine's Docker Engine."""

    def __init__(self, prefix: str = "arena-mh") -> None:
        import uuid

        tag = uuid.uuid4().hex[:6]
        self.ns, self.root_if, self.ns_if = f"{prefix}-{tag}", f"armh{tag}a", f"armh{tag}b"
        self.net = free_private_slash30()
        self.root_ip, self.ns_ip = (str(a) for a in self.net.hosts())
        self.made_ns = self.made_link = False
        self.enter = ["nsenter", f"--net=/var/run/netns/{self.ns}", "--"]

    @staticmethod
    def _run(*cmd: str) -> None:
        subprocess.run(list(cmd), check=True, capture_output=True)

    def create(self) -> None:
        """Make the namespace and the link; raises CalledProcessError when not permitted (undo: destroy)."""
        self._run("ip", "netns", "add", self.ns)
        self.made_ns = True
        self._run("ip", "link", "add", self.root_if, "type", "veth", "peer", "name", self.ns_if)
        self.made_link = True
        self._run("ip", "link", "set", self.ns_if, "netns", self.ns)
        self._run("ip", "addr", "add", f"{self.root_ip}/30", "dev", self.root_if)
        self._run("ip", "link", "set", self.root_if, "up")
        self._run("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self._run("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        self._run("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")

    def destroy(self) -> None:
        if self.made_ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # takes its veth end along
        if self.made_link:
            subprocess.run(["ip", "link", "del", self.root_if], capture_output=True)  # gone already: harmless

    def in_namespace(self, pid: int) -> bool:
        """Whether process ``pid`` lives in this link's namespace."""
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/var/run/netns/{self.ns}").st_ino


def link_unavailable() -> str | None:
    """Why a :class:`Link` cannot be made here (no root, no iproute2 or nsenter), or None."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "network namespaces need root, iproute2 and nsenter (util-linux)"
    return None


def make_link(prefix: str = "arena-mh"):
    """A created :class:`Link` (the caller destroys it), or skips the test with the reason: no root or
    tools, or `ip netns` / veth refused (a container without CAP_NET_ADMIN)."""
    import pytest

    why = link_unavailable()
    if why:
        pytest.skip(why)
    link = Link(prefix)
    try:
        link.create()
    except subprocess.CalledProcessError as e:
        link.destroy()
        pytest.skip(f"`ip netns` / veth not permitted here: {e.stderr.decode(errors='replace').strip()}")
    return link


# -- a private PostgreSQL cluster (tests that stop the database, or reach it from another "host") ---------
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port free on ``addr`` right now."""
    import socket

    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def postgres_unavailable() -> str | None:
    """Why a private PostgreSQL cannot be run here, or None."""
    import pwd

    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        return "PostgreSQL 15 server binaries not installed (scripts/postgres.sh installs them)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres system user"
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster run as the postgres user, listening only on ``addr`` (a free port);
    ``trust_net`` (CIDR) also lets that network in. Lives in a mkdtemp folder: pytest's tmp_path is private
    to root, postgres could not enter it. ``stop``/``start`` as often as a test likes; ``destroy`` at the end."""

    def __init__(self, addr: str = "127.0.0.1", trust_net: str | None = None) -> None:
        import tempfile

        self.addr, self.port = addr, free_port(addr)
        self.root = Path(tempfile.mkdtemp(prefix="arena-pg-"))
        shutil.chown(self.root, "postgres")
        self.dir = self.root / "pgdata"
        self.running = False
        self._as_pg(str(PG_BIN / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "arena", "--no-sync")
        if trust_net:
            with open(self.dir / "pg_hba.conf", "a") as f:
                f.write(f"host all all {trust_net} trust\n")
        self.url = f"postgresql+psycopg://arena@{addr}:{self.port}/postgres"

    @staticmethod
    def _as_pg(*cmd: str) -> None:
        r = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, cwd="/tmp")
        if r.returncode:
            raise RuntimeError(f"{cmd[0]} failed: {r.stderr[-500:]}")

    def start(self) -> None:
        self._as_pg(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-l", str(self.root / "pg.log"), "-o",
                    f"-p {self.port} -k {self.dir} -c listen_addresses={self.addr} -c fsync=off", "start")
        self.running = True

    def stop(self) -> None:
        self._as_pg(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-m", "fast", "stop")
        self.running = False

    def destroy(self) -> None:
        from arena.db import dispose_engines

        dispose_engines()
        if self.running:
            try:
                self.stop()
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

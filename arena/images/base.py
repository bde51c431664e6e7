"""Arena's base image, built without any container registry.

A Debian bookworm root filesystem is made with ``mmdebstrap`` (``--variant=essential`` +
python3, python3-numpy, libstdc++6), SimpleITK's manylinux wheel is installed into it from
the host with pip, and the tarball is ``docker import``-ed with docker-py. The result is
tagged ``arena/base:<version>`` and, when that tag is free, ``python:3.11-slim`` too, so
Dockerfiles written for the official image build unchanged (``FROM python:3.11-slim``).

Needs root (mmdebstrap's root mode; unprivileged users need working user namespaces for its
``unshare`` mode), the ``mmdebstrap`` package, a Debian mirror over http and PyPI (or a local
wheel) for SimpleITK. Takes about a minute and ~1 GB of temporary disk.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import arena
from arena.config import load_settings

from .docker_client import docker_client

PYTHON_ALIAS = "python:3.11-slim"
SUITE = "bookworm"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3 (3.11.2)
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# passwd: groupadd/useradd, which grand-challenge's templates (and many Dockerfiles) run to add a user
PACKAGES = ("python3", "python3-numpy", "libstdc++6", "passwd")
WHEELS = ("SimpleITK",)
# the tag names the contents too: an engine that holds an older base image of the same Arena version builds
# the new one instead of reusing it
BASE_TAG = f"arena/base:{arena.__version__}-" + hashlib.sha256(repr((SUITE, PACKAGES, WHEELS)).encode()).hexdigest()[:8]
MERGED_USR_HOOKS = "/usr/share/mmdebstrap/hooks/merged-usr"
BASE_LABEL = "org.arena.base"

DPKG_PATH_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)

IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
    f"LABEL {BASE_LABEL}=1",
    f"LABEL org.arena.version={arena.__version__}",
    f"LABEL org.arena.debian-suite={SUITE}",
)

SOURCES_FILES = ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")
SOURCES_DIR = "/etc/apt/sources.list.d"

Log = Callable[[str], None]


# --------------------------------------------------------------------------- mirrors


def _parse_one_line(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[3:])  # drop "[signed-by=... arch=...]"
        parts = line.split()
        if len(parts) >= 3:
            entries.append((parts[0], [parts[1]], parts[2:]))
    return entries


def _parse_deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:  # continuation line
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return entries


def _host_source_entries() -> list[tuple[str, list[str], list[str]]]:
    paths = [p for p in SOURCES_FILES if os.path.isfile(p)]
    if os.path.isdir(SOURCES_DIR):
        for name in sorted(os.listdir(SOURCES_DIR)):
            p = os.path.join(SOURCES_DIR, name)
            if p not in paths and name.endswith((".list", ".sources")):
                paths.append(p)
    entries = []
    for p in paths:
        try:
            text = Path(p).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        entries += _parse_deb822(text) if p.endswith(".sources") else _parse_one_line(text)
    return entries


def debian_sources(suite: str = SUITE, entries: Iterable[tuple[str, list[str], list[str]]] | None = None) -> list[str]:
    """One-line apt sources for ``suite`` (main component) using the host's own mirrors.

    ``ARENA_DEBIAN_MIRROR`` overrides the main mirror. Otherwise the host's entries for
    ``suite``, ``suite-updates`` and ``suite-security`` are reused (so a host that reaches
    Debian only through a local mirror keeps using it); without one for ``suite`` itself,
    any host URI ending in ``/debian`` is used, else ``http://deb.debian.org/debian``.
    """
    override = load_settings().debian_mirror
    if override:
        return [f"deb {override.rstrip('/')} {suite} main"]
    if entries is None:
        entries = _host_source_entries()
    entries = list(entries)

    wanted = (suite, f"{suite}-updates", f"{suite}-security", f"{suite}/updates")
    lines: list[str] = []
    have_main = False
    for uri, suites, components in entries:
        if "main" not in components:
            continue
        for s in suites:
            if s in wanted:
                line = f"deb {uri} {s} main"
                if line not in lines:
                    lines.append(line)
                have_main = have_main or s == suite
    if not have_main:
        mirror = next(
            (uri for uri, _s, comps in entries if "main" in comps and uri.rstrip("/").endswith("/debian")),
            FALLBACK_MIRROR,
        )
        lines.insert(0, f"deb {mirror.rstrip('/')} {suite} main")
    return lines


# --------------------------------------------------------------------------- helpers


class _Clock:
    def __init__(self, log: Log):
        self.t0 = time.monotonic()
        self._log = log

    def __call__(self, msg: str) -> None:
        self._log(f"[base-image {time.monotonic() - self.t0:6.1f}s] {msg}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def _split_tag(tag: str) -> tuple[str, str]:
    from docker.utils import parse_repository_tag

    repo, t = parse_repository_tag(tag)
    return repo, t or "latest"


def _image_or_none(client, ref: str):
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _mountpoints_under(path: str) -> list[str]:
    path = os.path.realpath(path)
    found = []
    with contextlib.suppress(OSError):
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path or mp.startswith(path + "/"):
                    found.append(mp)
    return found


def _safe_rmtree(path: str, log: Log) -> None:
    """Remove a temp dir, but never recurse into something still mounted inside it."""
    mounts = _mountpoints_under(path)
    if mounts:
        log(f"WARNING: not removing {path}: still mounted inside: {', '.join(mounts[:5])}")
        return
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _build_lock(name: str):
    """Serialize concurrent builds of the same tag on this machine (pytest-xdist, several workers)."""
    import fcntl

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    path = os.path.join(tempfile.gettempdir(), f"arena-build-{safe}.lock")
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _hook_script(wheels: list[str]) -> str:
    py = shlex.quote(sys.executable)
    pip_args = " ".join(shlex.quote(w) for w in wheels)
    return f"""#!/bin/sh
# mmdebstrap customize hook: $1 is the root filesystem.
set -eu
root="$1"
if [ ! -x "$root/usr/bin/python{PYTHON_VERSION}" ]; then
    found="$(ls "$root"/usr/bin/ | grep '^python' | tr '\\n' ' ')"
    echo "E: expected python{PYTHON_VERSION} in the Debian {SUITE} rootfs; found: $found" >&2
    exit 1
fi
target="$root/usr/local/lib/python{PYTHON_VERSION}/dist-packages"
mkdir -p "$target"
echo "I: arena: installing wheels into /usr/local/lib/python{PYTHON_VERSION}/dist-packages: {pip_args}"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \\
{py} -m pip install --quiet --progress-bar off --no-warn-script-location \\
    --only-binary=:all: --implementation cp \\
    --python-version {PYTHON_VERSION} --abi cp{PYTHON_VERSION.replace('.', '')} \\
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \\
    --target "$target" {pip_args}
rm -rf "$target/bin"
echo "I: arena: checking the interpreter inside the rootfs"
chroot "$root" /usr/bin/python3 -c "import sys, numpy, SimpleITK as s; \\
print('I: arena: python', sys.version.split()[0], 'numpy', numpy.__version__, 'SimpleITK', s.Version.VersionString())"
"""


_LOGGED_PREFIXES = ("I:", "W:", "E:", "WARNING", "ERROR")


def _run_streaming(
    cmd: list[str], env: dict, clock: _Clock, timeout_s: float, tail_lines: int = 60
) -> tuple[int, list[str]]:
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, text=True, errors="replace", bufsize=1,
    )
    timed_out = threading.Event()

    def _expire():
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()  # mmdebstrap unmounts and cleans up on SIGTERM

    timer = threading.Timer(timeout_s, _expire)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            if line.startswith(_LOGGED_PREFIXES) or "error" in line.lower():
                clock(line)  # the rest (apt/dpkg chatter) only goes to the error tail
        rc = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(Exception):
            proc.wait(timeout=60)
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        tail.append(f"(killed after {timeout_s:.0f} s)")
        rc = rc or 124
    return rc, list(tail)


# --------------------------------------------------------------------------- public API


def tag_python_alias(image_id: str, alias: str = PYTHON_ALIAS, *, client=None, log: Log = print) -> bool:
    """Tag ``image_id`` as ``python:3.11-slim`` unless that tag already exists.

    An existing alias is only moved when it points to an older Arena base image (label
    ``org.arena.base``); a real or user-provided ``python:3.11-slim`` is never touched.
    Returns True when the tag was set.
    """
    client = client or docker_client()
    image = client.images.get(image_id)
    current = _image_or_none(client, alias)
    if current is not None:
        if current.id == image.id:
            return False
        if (current.labels or {}).get(BASE_LABEL) != "1":
            log(f"{alias} already exists ({current.short_id}, not an Arena image): left as it is")
            return False
    repo, tag = _split_tag(alias)
    image.tag(repo, tag)
    log(f"tagged {image.short_id} as {alias}")
    return True


def build_base_image(
    tag: str = BASE_TAG,
    *,
    extra_wheels: Iterable[str] = (),
    force: bool = False,
    log: Log = print,
    python_alias: bool = True,
    timeout_s: float = 1800,
) -> str:
    """Build Arena's base image with mmdebstrap + ``docker import``; return its image id.

    Returns at once when ``tag`` exists and ``force`` is false. ``extra_wheels`` are pip
    requirement specs or wheel paths installed (with their dependencies, binary wheels only)
    beside SimpleITK into ``/usr/local/lib/python3.11/dist-packages``; note that a dependency
    on numpy then installs a PyPI numpy that shadows Debian's 1.24.
    """
    client = docker_client()
    existing = _image_or_none(client, tag)
    if existing is not None and not force:
        if python_alias:
            tag_python_alias(existing.id, client=client, log=log)
        return existing.id

    with _build_lock(tag):
        existing = _image_or_none(client, tag)
        if existing is not None and not force:  # built by a concurrent caller meanwhile
            if python_alias:
                tag_python_alias(existing.id, client=client, log=log)
            return existing.id
        image_id = _build(client, tag, list(extra_wheels), log, timeout_s)
        if python_alias:
            tag_python_alias(image_id, client=client, log=log)
        if existing is not None and existing.id != image_id:
            # the replaced build, unless a container, a child image or another tag still uses it
            with contextlib.suppress(Exception):
                if not client.images.get(existing.id).tags:
                    client.images.remove(existing.id, noprune=False)
        return image_id


def _build(client, tag: str, extra_wheels: list[str], log: Log, timeout_s: float) -> str:
    clock = _Clock(log)
    mmdebstrap = shutil.which("mmdebstrap")
    if not mmdebstrap:
        raise RuntimeError(
            "mmdebstrap is not installed; it is needed to build the base image without a registry: "
            "`apt-get install --no-install-recommends mmdebstrap` (or run `bash scripts/setup.sh` as root)"
        )
    if not os.path.isdir(MERGED_USR_HOOKS):
        raise RuntimeError(
            f"mmdebstrap's merged-usr hooks are missing ({MERGED_USR_HOOKS}); is mmdebstrap >= 1.0 installed?"
        )

    sources = debian_sources()
    wheels = list(WHEELS) + extra_wheels
    clock(f"building {tag}: Debian {SUITE} ({', '.join(PACKAGES)}) + {', '.join(wheels)}")
    for s in sources:
        clock(f"apt source: {s}")

    workdir = tempfile.mkdtemp(prefix="arena-base-")
    try:
        hook = os.path.join(workdir, "customize.sh")
        Path(hook).write_text(_hook_script(wheels), encoding="utf-8")
        os.chmod(hook, 0o755)
        rootfs_tar = os.path.join(workdir, "rootfs.tar")
        mm_tmp = os.path.join(workdir, "tmp")
        os.mkdir(mm_tmp)

        cmd = [
            mmdebstrap,
            "--variant=essential",
            f"--include={','.join(PACKAGES)}",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--aptopt=Acquire::Retries \"3\"",
            f"--hook-dir={MERGED_USR_HOOKS}",
            *[f"--dpkgopt={o}" for o in DPKG_PATH_OPTIONS],
            f'--customize-hook=sh {shlex.quote(hook)} "$1"',
            SUITE,
            rootfs_tar,
            *sources,
        ]
        env = dict(os.environ, TMPDIR=mm_tmp, LC_ALL="C.UTF-8")
        clock("running mmdebstrap")
        rc, tail = _run_streaming(cmd, env, clock, timeout_s)
        if rc != 0 or not os.path.isfile(rootfs_tar):
            raise RuntimeError(
                f"mmdebstrap failed (exit {rc}) building {tag} after {clock.elapsed:.0f} s; "
                f"last output:\n" + "\n".join(tail)
            )
        size_mb = os.path.getsize(rootfs_tar) / 1e6
        clock(f"rootfs tarball ready: {size_mb:.0f} MB; importing into Docker")

        repo, t = _split_tag(tag)
        result = client.api.import_image_from_file(rootfs_tar, repository=repo, tag=t, changes=list(IMAGE_CHANGES))
        text = result if isinstance(result, str) else repr(result)
        if "error" in text.lower():
            raise RuntimeError(f"docker import of {tag} failed: {text.strip()[-2000:]}")
        image = client.images.get(tag)
        clock(f"done: {tag} = {image.short_id}, {image.attrs.get('Size', 0) / 1e6:.0f} MB")
        return image.id
    finally:
        _safe_rmtree(workdir, clock)


def main(argv: list[str] | None = None) -> int:  # python -m arena.images.base [--force] [TAG]
    import argparse

    ap = argparse.ArgumentParser(description="Build Arena's base image without a registry")
    ap.add_argument("tag", nargs="?", default=BASE_TAG)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--wheel", action="append", default=[], help="extra wheel / requirement to install")
    args = ap.parse_args(argv)
    print(build_base_image(args.tag, extra_wheels=args.wheel, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())

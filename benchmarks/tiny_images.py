"""Tiny (≈1 MB) algorithm images made from Debian's static busybox, for benchmarks that push many real
uploads through intake: a `docker save` of them is small enough that 100 uploads take seconds, not the
minutes that 400 MB Python images would.

Behaviours (ENTRYPOINT scripts, run as uid 1000 under the normal sandbox):
- ``good``: writes an all-background label map with the input's exact geometry (valid, scored; the .mha
  header is copied from the input with grep/sed, the voxels come from /dev/zero);
- ``fail``: prints an error and exits 3;
- ``sleeper``: sleeps past any case time limit;
- ``bomb``: fills /output until the size cap stops it;
- ``forkbomb``: forks until the pids limit stops it;
- ``wrong``: writes a label map of the wrong size;
- ``burn``: keeps one core busy for $BURN_S seconds (default 3), then behaves like ``good``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

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
    "sleeper": "sleep 100000\n",
    "bomb": "mkdir -p /output/images/oar-segmentation\nwhile :; do head -c 1048576 /dev/zero >> /output/junk; done\n",
    "forkbomb": "f() { f | f & }\nf\nsleep 30\n",
    "wrong": GOOD.replace('head -c $(($1 * $2 * $3)) /dev/zero >> "$o"',
                          'head -c 100 /dev/zero >> "$o"').replace(
        "grep -a -m 1 '^DimSize = ' \"$f\"; echo", "echo 'DimSize = 10 10 1'; echo"),
}


def available() -> bool:
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


def build(kind: str, tag: str | None = None, variant: str = "") -> str:
    """Import the ``kind`` image into the local engine; returns its tag. A ``variant`` string makes a
    distinct image (another image ID) with the same behaviour: Arena refuses the same image twice."""
    tag = tag or f"arena-bench/tiny-{kind}:{variant or 'latest'}"
    subprocess.run(["docker", "import", "--change", 'ENTRYPOINT ["/bin/sh", "/run.sh"]', "--change", "USER 1000",
                    "--change", "ENV PATH=/bin", "--change", f"LABEL arena.variant={variant or '-'}", "-", tag],
                   input=_rootfs_tar(SCRIPTS[kind]), check=True, capture_output=True)
    return tag


def save(tag: str, path: Path) -> Path:
    """``docker save`` the image to ``path`` (what a participant uploads)."""
    with open(path, "wb") as f:
        subprocess.run(["docker", "save", tag], stdout=f, check=True)
    return path


def build_all(out_dir: Path) -> dict[str, Path]:
    """Every behaviour as a saved tarball in ``out_dir``: {kind: tarball}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {kind: save(build(kind), out_dir / f"{kind}.tar") for kind in SCRIPTS}


if __name__ == "__main__":  # build and list them
    for k, p in build_all(Path(os.environ.get("OUT", "/tmp/tiny-images"))).items():
        print(k, p, f"{p.stat().st_size / 1e6:.1f} MB")

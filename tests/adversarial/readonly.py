# Tries to write where it may not: /input, /, system directories; and to remount. One JSON line.
import errno
import json
import os
import subprocess

out = {}


def attempt(name, fn):
    try:
        fn()
        out[name] = "WROTE"
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))


def write(path):
    def go():
        with open(path, "w") as f:
            f.write("pwned")
    return go


ct_dir = "/input/images/ct"
victim = os.path.join(ct_dir, sorted(os.listdir(ct_dir))[0])
attempt("/input/new", write("/input/new"))
attempt("/input/inputs.json", write("/input/inputs.json"))
attempt("/input image overwrite", write(victim))
attempt("/input image unlink", lambda: os.unlink(victim))
attempt("/input chmod", lambda: os.chmod(victim, 0o777))
attempt("/new", write("/new"))
attempt("/etc/passwd", write("/etc/passwd"))
attempt("/usr/bin/python3 replace", write("/usr/bin/evil"))
attempt("/dev/shm", write("/dev/shm/ok"))
attempt("/tmp", write("/tmp/ok"))
r = subprocess.run(["sh", "-c", "cp /bin/true /tmp/t && /tmp/t"], capture_output=True, text=True)
out["exec from /tmp"] = r.returncode
try:
    r = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True, text=True)
    out["remount"] = r.returncode
except OSError as e:
    out["remount"] = f"no mount binary ({e.strerror})"
try:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    MS_REMOUNT = 32
    rc = libc.mount(b"none", b"/", None, MS_REMOUNT, None)
    out["mount(2) remount /"] = errno.errorcode.get(ctypes.get_errno(), "?") if rc else "REMOUNTED"
except OSError as e:
    out["mount(2) remount /"] = str(e)
print(json.dumps(out), flush=True)

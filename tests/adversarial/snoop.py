# Reads what it should not: environments, host secrets, engine sockets, kernel memory. One JSON line.
import json
import os

out = {"environ_self": dict(os.environ)}


def read(path, n=4096):
    try:
        with open(path, "rb") as f:
            return {"ok": True, "data": f.read(n).decode("utf-8", "replace")}
    except Exception as e:  # noqa: BLE001
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def env_of(pid):
    r = read(f"/proc/{pid}/environ", 65536)
    if r["ok"]:
        r["data"] = dict(kv.split("=", 1) for kv in r["data"].split("\0") if "=" in kv)
    return r


out["environ_pid1"] = env_of(1)
out["environ_all"] = {p: env_of(p) for p in os.listdir("/proc") if p.isdigit()}
for path in ("/etc/shadow", "/etc/gshadow", "/root/.bash_history", "/root/.docker/config.json", "/proc/kcore",
             "/dev/mem", "/proc/1/root/etc/shadow", "/sys/firmware/dmi/tables/DMI", "/proc/sysrq-trigger",
             "/var/run/docker.sock", "/run/secrets", "/host/etc/shadow", "/work", "/proc/1/mem"):
    out[path] = read(path, 512)
out["mountinfo"] = read("/proc/self/mountinfo", 65536)
out["devices"] = sorted(os.listdir("/dev"))
out["root_dirs"] = sorted(os.listdir("/"))
print(json.dumps(out), flush=True)

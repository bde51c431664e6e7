# Tries to reach anything off the container: host ports, the docker0 gateway, DNS, raw/packet sockets,
# the Docker socket. Prints one JSON line: what each attempt gave.
import json
import os
import socket
import sys

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 47_123
results = {}


def attempt(name, fn):
    try:
        results[name] = {"ok": True, "value": fn()}
    except Exception as e:  # noqa: BLE001 - a probe reports whatever stopped it
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}


def tcp(host, port):
    def go():
        with socket.create_connection((host, port), timeout=2) as s:
            return s.getpeername()
    return go


for host in ("127.0.0.1", "172.17.0.1", "10.0.2.2", "1.1.1.1"):
    for port in (PORT, 6379, 2375, 2376, 22, 80):
        attempt(f"tcp {host}:{port}", tcp(host, port))
attempt("dns example.com", lambda: socket.getaddrinfo("example.com", 80))
attempt("dns localhost-only", lambda: socket.gethostbyname("host.docker.internal"))


def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hello", ("8.8.8.8", 53))
        s.settimeout(2)
        return s.recvfrom(512)


attempt("udp 8.8.8.8:53", udp)
attempt("raw icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).fileno())
attempt("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).fileno())


def docker_sock():
    for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock"):
        if os.path.exists(p):
            s = socket.socket(socket.AF_UNIX)
            s.connect(p)
            return p
    raise FileNotFoundError("no engine socket")


attempt("docker socket", docker_sock)
results["interfaces"] = sorted(os.listdir("/sys/class/net"))
print(json.dumps(results), flush=True)

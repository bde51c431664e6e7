"""Checking (and, for a local demo, starting) the services Arena needs: Redis and the Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from functools import lru_cache
from urllib.parse import urlparse

from redis import Redis
from redis.exceptions import RedisError


@lru_cache(maxsize=8)
def redis_client(url: str) -> Redis:
    """One Redis client (with its connection pool) per URL and process, shared by the request handlers
    and jobs that used to open a pool per call. Thread-safe; after a fork redis-py's pool opens fresh
    connections in the child."""
    return Redis.from_url(url)


def redis_ok(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=2).ping())
    except (RedisError, OSError):
        return False


def ensure_redis(url: str, log=print) -> None:
    """Start a local redis-server (no persistence) when ``url`` points at this machine and none answers."""
    if redis_ok(url):
        return
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if host not in ("127.0.0.1", "localhost") or not shutil.which("redis-server"):
        raise RuntimeError(f"Redis at {url} does not answer; start it (apt-get install redis-server) "
                           "or set ARENA_REDIS_URL")
    log(f"starting redis-server on {host}:{port}")
    subprocess.run(["redis-server", "--bind", host, "--port", str(port), "--daemonize", "yes", "--save", "",
                    "--appendonly", "no"], check=True, capture_output=True)
    for _ in range(50):
        if redis_ok(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"redis-server started but {url} does not answer")


def ensure_docker(log=print):
    """A docker client; starts ``dockerd`` in the background (as root) when its socket is absent."""
    from arena.images.docker_client import DockerUnavailable, docker_client

    try:
        return docker_client()
    except DockerUnavailable:
        if os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock") or os.geteuid() != 0 \
                or not shutil.which("dockerd"):
            raise
    log("starting dockerd (log: /var/log/arena-dockerd.log)")
    with open("/var/log/arena-dockerd.log", "ab") as logf:
        subprocess.Popen(["dockerd"], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            return docker_client()
        except DockerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)

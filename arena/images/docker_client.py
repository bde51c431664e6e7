"""Connecting to the Docker Engine (docker-py), with an error that says what to do."""

from __future__ import annotations

import os

DEFAULT_TIMEOUT = 120
DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerUnavailable(RuntimeError):
    """The Docker Engine cannot be reached (not running, wrong DOCKER_HOST, no permission)."""


class EngineLost(DockerUnavailable):
    """The connection to the Docker Engine broke in the middle of a call (dockerd stopped, crashed or
    restarted while a container ran): not an answer from the engine, and not the algorithm's fault."""


def connection_broke(exc: BaseException) -> bool:
    """Whether a docker-py call failed because the connection to the engine broke or was refused
    (``requests`` connection/protocol errors), as opposed to an API error the engine answered with."""
    import requests

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError))


def engine_address() -> str:
    """Where this process looks for the engine, in words (for error messages)."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST={host}"
    return f"unix://{DEFAULT_SOCKET} (DOCKER_HOST is not set)"


def docker_client(timeout: int = DEFAULT_TIMEOUT):
    """Return a connected ``docker.DockerClient`` (``docker.from_env``).

    Raises :class:`DockerUnavailable` (a ``RuntimeError``) naming the address tried and
    how to start the engine when it cannot be reached.
    """
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        raise DockerUnavailable("the 'docker' Python package is not installed: pip install docker") from exc

    import requests

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except (DockerException, requests.exceptions.RequestException, OSError) as exc:
        detail = str(exc).strip() or exc.__class__.__name__
        hint = (
            "Start it as root with `bash scripts/setup.sh`, or "
            "`nohup dockerd >/var/log/arena-dockerd.log 2>&1 &`, "
            "or point DOCKER_HOST at a running engine"
        )
        if "ermission denied" in detail:
            hint = (
                f"Permission denied on {DEFAULT_SOCKET}: run as root or add the user to the "
                "'docker' group (then log in again)"
            )
        raise DockerUnavailable(
            f"Cannot connect to the Docker Engine at {engine_address()}: {detail}. {hint}."
        ) from exc

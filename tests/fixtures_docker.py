"""Session fixtures for tests that need the Docker Engine and Arena's base image.

Import them into ``tests/conftest.py``::

    from fixtures_docker import docker_engine, base_image  # noqa: F401

Outside CI a missing engine (or mmdebstrap) skips the test with the reason; with
``CI=true`` it fails instead, so a broken CI machine cannot pass by skipping everything.
"""

from __future__ import annotations

import os
import shutil

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str):
    """Skip outside CI, fail in CI (CI=true)."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A connected docker-py client (``arena.images.docker_client``)."""
    from arena.images.docker_client import docker_client

    try:
        client = docker_client()
    except RuntimeError as exc:
        unavailable(f"Docker Engine unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """Tag of Arena's base image, built once per machine (reused when already present)."""
    from arena.images import base

    tag = os.environ.get("ARENA_BASE_IMAGE", base.BASE_TAG)
    try:
        docker_engine.images.get(tag)
        present = True
    except Exception:
        present = False
    if not present and not shutil.which("mmdebstrap"):
        unavailable("mmdebstrap is not installed (apt-get install mmdebstrap); cannot build the base image")
    base.build_base_image(tag, log=lambda line: print(line, flush=True))
    return tag

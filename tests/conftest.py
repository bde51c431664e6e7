"""Shared fixtures: a throw-away ARENA_HOME with a migrated database, Redis, Docker, shared data."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fixtures_docker import base_image, docker_engine, unavailable  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ARENA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def arena_env(tmp_path, monkeypatch):
    """Environment for one test: its own ARENA_HOME, SQLite file and RQ queue name."""
    env = {
        "ARENA_HOME": str(tmp_path / "arena-home"),
        "ARENA_QUEUE": f"arena-test-{uuid.uuid4().hex[:8]}",
    }
    env["ARENA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'arena-home' / 'arena.db'}"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def settings(arena_env):
    from arena.config import load_settings
    from arena.db import upgrade

    s = load_settings()
    s.ensure_dirs()
    upgrade(s.database_url)
    return s


@pytest.fixture
def db(settings):
    from arena.db import session_factory

    session = session_factory(settings.database_url)()
    yield session
    session.close()


@pytest.fixture(scope="session")
def redis_url():
    from arena.services import redis_ok

    url = os.environ.get("ARENA_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_ok(url):
        unavailable(f"Redis does not answer at {url}")
    return url


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        unavailable(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA

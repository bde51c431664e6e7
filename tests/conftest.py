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


# With ARENA_TEST_POSTGRES_URL set (e.g. postgresql+psycopg://arena:arena@127.0.0.1:5432/postgres, see
# scripts/postgres.sh) every test gets its own fresh PostgreSQL database instead of a SQLite file.
POSTGRES_ADMIN_URL = os.environ.get("ARENA_TEST_POSTGRES_URL", "")


def _postgres_database(name: str) -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    from arena.db import dispose_engines

    dispose_engines()
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def arena_env(tmp_path, monkeypatch):
    """Environment for one test: its own ARENA_HOME, database (SQLite file, or a fresh PostgreSQL
    database when ARENA_TEST_POSTGRES_URL is set) and RQ queue name."""
    env = {
        "ARENA_HOME": str(tmp_path / "arena-home"),
        "ARENA_QUEUE": f"arena-test-{uuid.uuid4().hex[:8]}",
        "ARENA_RUN_DIR": str(tmp_path / "runs"),
    }
    pg_name = None
    if POSTGRES_ADMIN_URL:
        pg_name = f"arena_test_{uuid.uuid4().hex[:12]}"
        env["ARENA_DATABASE_URL"] = _postgres_database(pg_name)
    else:
        env["ARENA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'arena-home' / 'arena.db'}"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    if pg_name:
        _drop_postgres_database(pg_name)


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


@pytest.fixture
def app(settings):
    """The Flask app on the test's settings (its own database)."""
    from arena.web import create_app

    return create_app(settings)


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

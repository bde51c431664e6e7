"""Database engine and sessions. The schema is created and upgraded by Alembic (``arena init``)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def get_engine(url: str) -> Engine:
    """One engine per URL per process (a forked RQ work-horse gets its own connections).

    SQLite gets WAL and a busy timeout so the web app and workers can share one file.
    """
    return _engine(url, os.getpid())


@lru_cache(maxsize=8)
def _engine(url: str, pid: int) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _ENGINES.append(engine)
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    _ENGINES.append(engine)
    return engine


def dispose_engines() -> None:
    """Close every pooled connection of this process (before dropping a database, or after a fork)."""
    for engine in list(_ENGINES):
        engine.dispose()
    _ENGINES.clear()
    _engine.cache_clear()


_ENGINES: list[Engine] = []


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` with Alembic."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)

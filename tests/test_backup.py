"""`arena export` / `arena import`: a task's rows and board survive the round trip into an empty database
(SQLite or PostgreSQL), secrets stay home, and a conflicting import writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import uuid
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from test_board import board_db  # noqa: F401 - the fixture: han-oar-9, real PDDCA cases, three teams' results


@pytest.fixture
def second_database(tmp_path):
    """A second, empty (migrated) database of the same kind as the test's."""
    import conftest
    from arena.db import upgrade

    name = None
    if conftest.POSTGRES_ADMIN_URL:
        name = f"arena_test_{uuid.uuid4().hex[:12]}"
        url = conftest._postgres_database(name)
    else:
        url = f"sqlite:///{tmp_path / 'restored.db'}"
    upgrade(url)
    yield url
    if name:
        conftest._drop_postgres_database(name)


def _counts(url: str) -> dict[str, int]:
    from arena.db import get_engine
    from arena.models import Base

    with get_engine(url).connect() as c:
        return {t.name: c.execute(select(func.count()).select_from(t)).scalar() for t in Base.metadata.sorted_tables}


def test_export_import_round_trip(board_db, db, settings, second_database, tmp_path, arena_env):  # noqa: F811
    from arena.db import session_scope
    from arena.leaderboard.query import compute_leaderboard
    from arena.models import Phase, Task, User

    task, val, subs = board_db
    alpha = db.scalar(select(User).where(User.name == "alpha"))
    from arena.users import set_password

    set_password(alpha, "correct horse battery staple")
    db.commit()
    archive = tmp_path / "han-oar-9.arena.tar.gz"
    env = {**os.environ, **arena_env}
    res = subprocess.run([sys.executable, "-m", "arena.cli", "export", "--task", "han-oar-9", "-o", str(archive)],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "3 submissions" in res.stdout and "3 evaluations" in res.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
        users = [json.loads(line) for line in tar.extractfile("tables/users.jsonl").read().decode().splitlines()]
    assert {"manifest.json", "task/task.yaml", "boards/validation.csv", "tables/metric_values.jsonl"} <= set(names)
    assert manifest["task"] == "han-oar-9" and manifest["rows"]["case_results"] == 8
    assert not any(n.startswith("tables/api_tokens") for n in names)  # tokens never leave
    assert all(u.get("token_sha256") is None and u.get("password_hash") is None for u in users)

    before = _counts(settings.database_url)
    res = subprocess.run([sys.executable, "-m", "arena.cli", "import", str(archive)],
                         env={**env, "ARENA_DATABASE_URL": second_database}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    after = _counts(second_database)
    for table in ("tasks", "phases", "cases", "phase_cases", "submissions", "evaluations", "case_results",
                  "metric_values", "teams", "users"):
        assert after[table] == before[table], table

    def board(url: str):
        with session_scope(url) as s:
            t = s.scalar(select(Task).where(Task.slug == "han-oar-9"))
            p = s.scalar(select(Phase).where(Phase.task_id == t.id, Phase.slug == "validation"))
            return compute_leaderboard(s, t, p, bootstrap=False).table

    import pandas as pd

    pd.testing.assert_frame_equal(board(settings.database_url), board(second_database))

    # new rows in the restored database get fresh IDs (PostgreSQL sequences were moved past the import)
    from arena.models import Team

    with session_scope(second_database) as s:
        s.add(Team(name="After import"))
        s.flush()
        assert s.scalar(select(func.max(Team.id))) > 3

    # importing again collides: nothing written, the error names the table
    res = subprocess.run([sys.executable, "-m", "arena.cli", "import", str(archive)],
                         env={**env, "ARENA_DATABASE_URL": second_database}, capture_output=True, text=True)
    assert res.returncode != 0 and "exist already" in res.stderr and "import into an empty database" in res.stderr
    assert _counts(second_database)["submissions"] == after["submissions"]


def test_import_refuses_what_is_not_an_archive(settings, tmp_path):
    from arena.backup import BackupError, import_archive

    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(BackupError, match="not an Arena export archive"):
        import_archive(settings, junk)
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(BackupError, match="no manifest.json"):
        import_archive(settings, empty)


def test_export_unknown_task(settings, tmp_path):
    from arena.backup import BackupError, export_task

    with pytest.raises(BackupError, match="no task 'nope'"):
        export_task(replace(settings), "nope", tmp_path / "x.tar.gz")
    assert not list(tmp_path.glob("*.partial"))

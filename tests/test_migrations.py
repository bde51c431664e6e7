"""Alembic: every revision applies from an empty database and upgrades keep the data (SQLite, and
PostgreSQL when ARENA_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text


def test_stepwise_upgrade_keeps_data(arena_env):
    from alembic import command
    from alembic.script import ScriptDirectory

    from arena.db import alembic_config, dispose_engines

    url = arena_env["ARENA_DATABASE_URL"]
    cfg = alembic_config(url)
    revisions = [r.revision for r in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]
    assert revisions[:3] == ["0001", "0002", "0003"]
    command.upgrade(cfg, "0001")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO teams (id, name, created_at) VALUES (1, 'Old team', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO tasks (id, slug, title, kind, spec_path, spec, created_at, updated_at) VALUES "
                       "(1, 't', 'T', 'segmentation', '/x', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO phases (id, task_id, slug, title) VALUES (1, 1, 'validation', 'V')"))
        c.execute(text("INSERT INTO submissions (id, task_id, phase_id, team_id, status, upload_bytes, created_at, "
                       "updated_at) VALUES (1, 1, 1, 1, 'validated', 123, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO evaluations (id, submission_id, status, cases_total, cases_done, created_at) "
                       "VALUES (1, 1, 'succeeded', 1, 1, '2026-01-01 00:00:00')"))  # points at the submission
    for rev in revisions[1:]:
        command.upgrade(cfg, rev)
    with engine.connect() as c:
        assert c.execute(text("SELECT name, is_reference FROM teams")).one() == ("Old team", False)
        assert c.execute(text("SELECT upload_bytes, image_user FROM submissions")).one() == (123, None)
        assert c.execute(text("SELECT submission_id, status FROM evaluations")).one() == (1, "succeeded")
        c.execute(text("UPDATE submissions SET upload_bytes = 5000000000"))  # > 2**31: 64-bit since 0002
        assert c.execute(text("SELECT upload_bytes FROM submissions")).scalar() == 5_000_000_000
    cols = {c["name"] for c in inspect(engine).get_columns("case_results")}
    assert {"failure", "cpu_s", "peak_memory_mb", "gpu_memory_peak_mb"} <= cols
    command.downgrade(cfg, "0001")
    assert "is_reference" not in {c["name"] for c in inspect(engine).get_columns("teams")}
    engine.dispose()
    dispose_engines()


def test_0004_moves_tokens_into_api_tokens(arena_env):
    """users.token_sha256 (0001–0003) becomes an api_tokens row; the token keeps working; down and up again."""
    from alembic import command

    from arena.db import alembic_config, dispose_engines, session_factory

    url = arena_env["ARENA_DATABASE_URL"]
    cfg = alembic_config(url)
    command.upgrade(cfg, "0003")
    engine = create_engine(url)
    from arena.users import hash_token

    with engine.begin() as c:
        c.execute(text("INSERT INTO teams (id, name, created_at, is_reference) VALUES (1, 'T', '2026-01-01 00:00:00', "
                       "false)"))
        c.execute(text("INSERT INTO users (id, name, team_id, is_admin, token_sha256, created_at) VALUES "
                       "(1, 'old', 1, false, :h, '2026-01-01 00:00:00'), (2, 'none', NULL, false, NULL, "
                       "'2026-01-01 00:00:00')"), {"h": hash_token("arena_old-token")})
    command.upgrade(cfg, "0004")
    with engine.connect() as c:
        assert c.execute(text("SELECT user_id, name, token_sha256 FROM api_tokens")).all() == [
            (1, "cli", hash_token("arena_old-token"))]
        assert c.execute(text("SELECT visibility FROM phases")).all() == []
    cols = {col["name"] for col in inspect(engine).get_columns("users")}
    assert "token_sha256" not in cols and "password_hash" in cols
    assert {"audit_events", "api_tokens", "task_organizers", "rate_hits"} <= set(inspect(engine).get_table_names())
    command.downgrade(cfg, "0003")
    with engine.connect() as c:
        assert c.execute(text("SELECT token_sha256 FROM users WHERE id = 1")).scalar() == hash_token("arena_old-token")
    assert "api_tokens" not in inspect(engine).get_table_names()
    command.upgrade(cfg, "head")
    from arena.users import user_for_token

    s = session_factory(url)()  # the ORM knows the newest schema only
    assert user_for_token(s, "arena_old-token").name == "old"
    s.close()
    engine.dispose()
    dispose_engines()


def test_0005_session_generations_and_rate_counters(arena_env):
    """Existing users get generation 0, are enabled and keep their own passwords; per-attempt rate_hits
    rows give way to rate_counters; down and up again."""
    from alembic import command

    from arena.db import alembic_config, dispose_engines

    url = arena_env["ARENA_DATABASE_URL"]
    cfg = alembic_config(url)
    command.upgrade(cfg, "0004")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (id, name, is_admin, password_hash, created_at) VALUES "
                       "(1, 'old', false, 'scrypt:x', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO rate_hits (key, at) VALUES ('signin:ip:1.2.3.4', '2026-01-01 00:00:00')"))
    command.upgrade(cfg, "0005_web_security")
    with engine.connect() as c:
        row = c.execute(text("SELECT session_generation, disabled_at, password_expires_at, password_hash "
                             "FROM users")).one()
        assert tuple(row) == (0, None, None, "scrypt:x")
    tables = set(inspect(engine).get_table_names())
    assert "rate_counters" in tables and "rate_hits" not in tables
    command.downgrade(cfg, "0004")
    assert "session_generation" not in {col["name"] for col in inspect(engine).get_columns("users")}
    assert "rate_hits" in inspect(engine).get_table_names()
    command.upgrade(cfg, "head")
    engine.dispose()
    dispose_engines()


def test_0008_carries_old_platform_failures_over_to_the_fault_column(arena_env):
    """Failed evaluations get a fault: 'platform' where the old message said so, 'participant' otherwise;
    the quota then refunds the same ones as before."""
    from alembic import command

    from arena.db import alembic_config, dispose_engines

    url = arena_env["ARENA_DATABASE_URL"]
    cfg = alembic_config(url)
    command.upgrade(cfg, "0007_model_archives")
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO teams (id, name, is_reference, quota_serial, created_at) VALUES "
                       "(1, 't', false, 0, '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO tasks (id, slug, title, kind, spec_path, spec, created_at, updated_at) VALUES "
                       "(1, 'x', 'x', 'segmentation', '', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO phases (id, task_id, slug, title) VALUES (1, 1, 'p', 'p')"))
        c.execute(text("INSERT INTO submissions (id, task_id, phase_id, team_id, status, created_at, updated_at) "
                       "VALUES (1, 1, 1, 1, 'validated', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        for i, (status, error) in enumerate([("failed", "worker w:1 died; gave up after 2 re-queues"),
                                             ("failed", "all 2 cases failed; first: exited with code 3"),
                                             ("succeeded", None)], start=1):
            c.execute(text("INSERT INTO evaluations (id, submission_id, status, error, cases_total, cases_done, "
                           "created_at) VALUES (:i, 1, :s, :e, 0, 0, '2026-01-01 00:00:00')"),
                      {"i": i, "s": status, "e": error})
    command.upgrade(cfg, "0008_evaluation_fault")
    with engine.connect() as c:
        assert c.execute(text("SELECT id, fault FROM evaluations ORDER BY id")).all() == [
            (1, "platform"), (2, "participant"), (3, None)]
    command.downgrade(cfg, "0007_model_archives")
    assert "fault" not in {col["name"] for col in inspect(engine).get_columns("evaluations")}
    command.upgrade(cfg, "head")
    engine.dispose()
    dispose_engines()

"""Alembic environment: runs migrations against the URL set by arena.db.alembic_config."""

from alembic import context

from arena.db import get_engine
from arena.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = get_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a table (create copy, drop, rename); with foreign keys enforced,
            # dropping a referenced table (teams, submissions) fails once rows point at it. The pragma
            # only takes effect outside a transaction, so it is set before the migration's one.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        if sqlite:
            bad = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            if bad:
                raise RuntimeError(f"migration left rows violating foreign keys: {bad[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

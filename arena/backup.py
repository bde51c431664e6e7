"""Export one task to a self-contained archive, and import such an archive into another database.

The archive (``.tar.gz``) holds:

| member | what |
|---|---|
| ``manifest.json`` | format version, Arena version, schema revision, task slug, export time, row counts |
| ``task/task.yaml`` | the task's validated spec as it was loaded |
| ``tables/<table>.jsonl`` | the rows: the task, its phases and cases, submissions (metadata: the image tarballs are not included), evaluations, per-case results, metric values, organizers, audit events about them, and the teams and users they refer to (names only: password hashes and API tokens are never exported) |
| ``boards/<phase>.csv`` | the leaderboard of each phase at export time (a snapshot; the importer recomputes boards from the rows) |

Which rows belong to a task is found from the schema's foreign keys, not from a hand-kept list, so a
table added later is exported as soon as it refers to the task's rows. Import keeps every primary key,
runs in one transaction (a conflict leaves the target database untouched) and names what conflicts.
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import json
import tarfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection, DateTime, Enum, Table, select, text, tuple_
from sqlalchemy.exc import IntegrityError

from arena import __version__
from arena.config import Settings
from arena.csv_cells import frame_csv
from arena.db import get_engine, session_scope
from arena.models import Base

FORMAT = 1
PARENT_ONLY = {"teams", "users"}  # pulled in when referred to, never as children (their tokens stay home)
SECRET_COLUMNS = {"users": {"password_hash", "token_sha256"}}
AUDIT_TARGETS = {"task": "tasks", "phase": "phases", "submission": "submissions", "evaluation": "evaluations",
                 "case": "cases"}


class BackupError(ValueError):
    """An archive that cannot be exported or imported, with what is wrong."""


def _pk(table: Table, row: dict[str, Any]) -> tuple:
    return tuple(row[c.name] for c in table.primary_key.columns)


def _single_id(table: Table) -> bool:
    cols = list(table.primary_key.columns)
    return len(cols) == 1 and cols[0].name == "id"


def _fetch(conn: Connection, table: Table, column, values: set) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    values = sorted(v for v in values if v is not None)
    for i in range(0, len(values), 500):
        out += [dict(r._mapping) for r in conn.execute(select(table).where(column.in_(values[i:i + 500])))]
    return out


def collect_task_rows(conn: Connection, task_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row that belongs to the task (children through foreign keys, to a fixpoint), then the rows
    they refer to (parents: teams, users). Returns {table name: rows}."""
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    rows: dict[str, dict[tuple, dict]] = defaultdict(dict)
    ids: dict[str, set] = defaultdict(set)

    def add(table: Table, new: list[dict]) -> bool:
        changed = False
        for r in new:
            key = _pk(table, r)
            if key not in rows[table.name]:
                rows[table.name][key] = r
                if _single_id(table):
                    ids[table.name].add(r["id"])
                changed = True
        return changed

    add(tables["tasks"], _fetch(conn, tables["tasks"], tables["tasks"].c.id, {task_id}))
    if not rows["tasks"]:
        raise BackupError(f"no task with id {task_id}")
    changed = True
    while changed:  # children of the task's rows
        changed = False
        for table in tables.values():
            if table.name in PARENT_ONLY or table.name == "tasks":
                continue
            for fk in table.foreign_keys:
                ref = fk.column.table.name
                if ref in PARENT_ONLY or not ids[ref]:
                    continue
                changed |= add(table, _fetch(conn, table, fk.parent, ids[ref]))
    if "audit_events" in tables:  # events about the exported objects (their target is not a foreign key)
        t = tables["audit_events"]
        for kind, tname in AUDIT_TARGETS.items():
            found = _fetch(conn, t, t.c.target_id, {str(i) for i in ids[tname]})
            add(t, [r for r in found if r["target_type"] == kind])
    changed = True
    while changed:  # parents they refer to
        changed = False
        for name in list(rows):
            table = tables[name]
            for fk in table.foreign_keys:
                ref = fk.column.table
                wanted = {r[fk.parent.name] for r in rows[name].values()} - ids[ref.name] - {None}
                if wanted:
                    changed |= add(ref, _fetch(conn, ref, fk.column, wanted))
    out = {}
    for name, by_key in rows.items():
        drop = SECRET_COLUMNS.get(name, set())
        out[name] = [{k: (None if k in drop else v) for k, v in r.items()} for r in by_key.values()]
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return v


def _schema_revision(conn: Connection) -> str | None:
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - a database made without Alembic
        return None


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def export_task(settings: Settings, slug: str, path: Path, boards: bool = True) -> dict[str, int]:
    """Write task ``slug`` to the archive ``path`` (written to a temporary name, then renamed: never a
    half-written archive). Returns the row count per table."""
    from arena.models import Phase, Task

    engine = get_engine(settings.database_url)
    with engine.connect() as conn:
        task_id = conn.execute(select(Base.metadata.tables["tasks"].c.id).where(
            Base.metadata.tables["tasks"].c.slug == slug)).scalar()
        if task_id is None:
            raise BackupError(f"no task {slug!r} in this database")
        rows = collect_task_rows(conn, task_id)
        revision = _schema_revision(conn)
    snapshots: dict[str, str] = {}
    spec: dict[str, Any] = {}
    with session_scope(settings.database_url) as s:
        task = s.scalar(select(Task).where(Task.slug == slug))
        spec = dict(task.spec)
        if boards:
            from arena.leaderboard.query import compute_leaderboard

            for phase in s.scalars(select(Phase).where(Phase.task_id == task.id)):
                snapshots[phase.slug] = frame_csv(compute_leaderboard(s, task, phase, bootstrap=False).table)
    counts = {name: len(r) for name, r in rows.items()}
    manifest = {"format": FORMAT, "arena_version": __version__, "schema_revision": revision, "task": slug,
                "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(), "rows": counts}
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        _add_member(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        _add_member(tar, "task/task.yaml", yaml.safe_dump(spec, sort_keys=False).encode())
        for name, table_rows in rows.items():
            body = "".join(json.dumps({k: _plain(v) for k, v in r.items()}) + "\n" for r in table_rows)
            _add_member(tar, f"tables/{name}.jsonl", body.encode())
        for phase_slug, csv in snapshots.items():
            _add_member(tar, f"boards/{phase_slug}.csv", csv.encode())
    tmp.replace(path)
    return counts


def read_archive(path: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, str]]:
    """(manifest, rows per table, board snapshots) of an archive; BackupError when it is not one."""
    try:
        tar = tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise BackupError(f"{path}: not an Arena export archive ({e})") from None
    with tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        if "manifest.json" not in members:
            raise BackupError(f"{path}: no manifest.json: not an Arena export archive")
        manifest = json.loads(tar.extractfile(members["manifest.json"]).read())
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{path}: archive format {manifest.get('format')!r}; this Arena reads format {FORMAT}")
        rows, boards = {}, {}
        for name, m in members.items():
            if name.startswith("tables/") and name.endswith(".jsonl"):
                data = tar.extractfile(m).read().decode()
                rows[name[len("tables/"):-len(".jsonl")]] = [json.loads(line) for line in data.splitlines() if line]
            elif name.startswith("boards/") and name.endswith(".csv"):
                boards[name[len("boards/"):-len(".csv")]] = tar.extractfile(m).read().decode()
    return manifest, rows, boards


def _restore(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        col = table.c[k]
        if v is not None and isinstance(col.type, DateTime):
            v = dt.datetime.fromisoformat(v)
        elif v is not None and isinstance(col.type, Enum) and col.type.enum_class is not None:
            v = col.type.enum_class(v)
        out[k] = v
    return out


def import_archive(settings: Settings, path: Path) -> dict[str, int]:
    """Restore an archive written by :func:`export_task`, keeping every ID. All or nothing: when a row
    would collide with one already there, nothing is written and the error names the table and IDs."""
    manifest, rows, _ = read_archive(Path(path))
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    unknown = sorted(set(rows) - set(tables))
    if unknown:
        raise BackupError(f"{path}: tables {unknown} are not in this Arena's schema (archive from a newer version?)")
    for name, table_rows in rows.items():
        extra = {k for r in table_rows for k in r} - set(tables[name].c.keys())
        if extra:
            raise BackupError(f"{path}: {name} has columns {sorted(extra)} this Arena does not know")
    engine = get_engine(settings.database_url)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:  # parents before children
            table_rows = rows.get(table.name)
            if not table_rows:
                continue
            pk_cols = list(table.primary_key.columns)
            keys = [tuple(r[c.name] for c in pk_cols) for r in table_rows]
            clash = []
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                if len(pk_cols) == 1:
                    cond = pk_cols[0].in_([k[0] for k in chunk])
                else:
                    cond = tuple_(*pk_cols).in_(chunk)
                clash += [tuple(r) for r in conn.execute(select(*pk_cols).where(cond))]
            if clash:
                shown = ", ".join(str(k[0] if len(k) == 1 else k) for k in clash[:5])
                raise BackupError(f"{table.name}: {len(clash)} row(s) exist already in the target database "
                                  f"(primary key {shown}{'…' if len(clash) > 5 else ''}); import into an empty database")
            try:
                conn.execute(table.insert(), [_restore(table, r) for r in table_rows])
            except IntegrityError as e:
                raise BackupError(f"{table.name}: {e.orig}") from None
            counts[table.name] = len(table_rows)
        if conn.dialect.name == "postgresql":  # serial counters past the restored IDs
            for table in Base.metadata.sorted_tables:
                if table.name in counts and _single_id(table):
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"(SELECT MAX(id) FROM {table.name}))"))
    return counts

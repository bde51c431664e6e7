"""Upload streaming: chunks to disk with a hash, size limit enforced, nothing half-written left behind."""

from __future__ import annotations

import hashlib
import io

import pytest

from arena.submissions.intake import UploadError, store_upload


def test_store_upload_hashes_and_renames(settings):
    data = b"abc" * 1_000_000
    up = store_upload(io.BytesIO(data), settings)
    assert up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest()
    assert up.path.read_bytes() == data and up.path.name.startswith(up.sha256[:16])
    assert not list(settings.uploads_dir.glob(".partial-*"))


def test_too_large_and_empty_leave_nothing(settings):
    with pytest.raises(UploadError, match="larger than the limit") as e:
        store_upload(io.BytesIO(b"x" * (3 * 2**20)), settings, max_bytes=2**20)
    assert e.value.status == 413
    with pytest.raises(UploadError, match="empty"):
        store_upload(io.BytesIO(b""), settings)
    assert list(settings.uploads_dir.iterdir()) == []


def test_api_refuses_oversized_upload(settings, db, monkeypatch):
    from pathlib import Path

    from arena.tasks.store import upsert_task
    from arena.users import create_user
    from arena.web import create_app

    upsert_task(db, Path(__file__).resolve().parents[1] / "tasks" / "han-oar-22")
    _, token = create_user(db, "eve", team="E")
    db.commit()
    monkeypatch.setenv("ARENA_MAX_UPLOAD_BYTES", str(2**20))
    from arena.config import load_settings

    client = create_app(load_settings()).test_client()
    r = client.post("/api/v1/tasks/han-oar-22/phases/validation/submissions", data=b"x" * (2 * 2**20),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 413 and "error" in r.get_json()
    assert list(settings.uploads_dir.iterdir()) == []
    r = client.post("/api/v1/tasks/han-oar-22/phases/validation/submissions", data=b"",
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "empty" in r.get_json()["error"]

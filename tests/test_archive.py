"""Upload archive checks: what a `docker save` tarball must look like, and the tag stripping."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from arena.submissions.archive import ArchiveLimits, InvalidImageArchive, inspect_image_archive, sanitized_tar_chunks


def _layer(data: bytes = b"print('hi')\n") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("app/run.py")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_archive(path, *, images=1, tags=("evil/python:3.11-slim",), extra=(), config_ok=True, drop_layer=False,
                 compress=False, payload: bytes | None = None):
    """A ``docker save``-like archive at ``path``; ``payload``: the layer's one file (its image ID follows it)."""
    layer = _layer() if payload is None else _layer(payload)
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
                         "config": {"User": "1000", "Labels": {"a": "b"}}} if config_ok else {"x": 1}).encode()
    cname = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": cname, "RepoTags": list(tags), "Layers": ["abc/layer.tar"]}] * images
    files = [("abc/layer.tar", layer), (cname, config), ("manifest.json", json.dumps(manifest).encode()),
             ("repositories", b'{"evil/python": {"3.11-slim": "abc"}}'), *extra]
    if drop_layer:
        files = files[1:]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, data in files:
            if isinstance(data, tarfile.TarInfo):
                t.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    blob = gzip.compress(raw.getvalue()) if compress else raw.getvalue()
    path.write_bytes(blob)
    return "sha256:" + hashlib.sha256(config).hexdigest()


@pytest.mark.parametrize("compress", [False, True])
def test_valid_archive_described(tmp_path, compress):
    p = tmp_path / "img.tar"
    image_id = make_archive(p, compress=compress)
    info = inspect_image_archive(p)
    assert info.image_id == image_id
    assert info.repo_tags == ["evil/python:3.11-slim"]
    assert info.compression == ("gzip" if compress else "none")
    assert info.user == "1000" and info.layers == ["abc/layer.tar"]


def test_sanitized_stream_drops_tags(tmp_path):
    p = tmp_path / "img.tar.gz"
    make_archive(p, compress=True)
    out = tmp_path / "clean.tar"
    out.write_bytes(b"".join(sanitized_tar_chunks(p, chunk_size=4096)))
    with tarfile.open(out) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("manifest.json"))
    assert "repositories" not in names and "abc/layer.tar" in names
    assert manifest[0]["RepoTags"] is None
    assert inspect_image_archive(out).image_id == inspect_image_archive(p).image_id


def _entry(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize("kwargs, message", [
    (dict(images=2), "exactly one image, manifest.json lists 2"),
    (dict(config_ok=False), "is not an image config"),
    (dict(drop_layer=True), "layers named in manifest.json are missing"),
    (dict(extra=[("../../etc/cron.d/x", b"boom")]), "points outside the archive"),
    (dict(extra=[("/etc/passwd", b"x")]), "absolute"),
    (dict(extra=[("dev", _entry("dev/sda", tarfile.BLKTYPE))]), "device or fifo"),
    (dict(extra=[("ln", _entry("abc/evil", tarfile.SYMTYPE, "/etc/shadow"))]), "links outside the archive"),
    (dict(extra=[("ln", _entry("abc/hl", tarfile.LNKTYPE, "manifest.json"))]), "hard link"),
])
def test_bad_archives_refused_with_reason(tmp_path, kwargs, message):
    p = tmp_path / "bad.tar"
    make_archive(p, **kwargs)
    with pytest.raises(InvalidImageArchive, match=message):
        inspect_image_archive(p)


def test_not_an_archive(tmp_path):
    for content, message in [(b"", "empty"), (b"hello world" * 100, "not a tar archive"),
                             (b"\x28\xb5\x2f\xfd" + b"\0" * 300, "zstd"),
                             (gzip.compress(b"x" * 1000)[:40], "truncated or corrupt")]:
        p = tmp_path / "x.tar"
        p.write_bytes(content)
        with pytest.raises(InvalidImageArchive, match=message):
            inspect_image_archive(p)


def test_no_manifest(tmp_path):
    p = tmp_path / "plain.tar"
    with tarfile.open(p, "w") as t:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        t.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(InvalidImageArchive, match="no manifest.json"):
        inspect_image_archive(p)


def test_size_and_bomb_caps(tmp_path):
    p = tmp_path / "big.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 80 * 2**20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    p.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1))
    with pytest.raises(InvalidImageArchive, match="expands more than"):
        inspect_image_archive(p)
    with pytest.raises(InvalidImageArchive, match="unpacks to more than"):
        inspect_image_archive(p, ArchiveLimits(max_uncompressed_bytes=2**20, max_ratio=1e9))

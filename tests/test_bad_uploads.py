"""Bad uploads, made from real ``docker save`` archives where that matters, refused with a reason.

tests/test_archive.py checks the rules on small synthetic tars; here each case starts from what the
engine really writes (legacy layout: ``<id>/layer.tar``, ``<id>/json``, ``<config>.json``,
``manifest.json``, ``repositories``) of a tiny ``FROM scratch`` image, damaged or extended the way a
careless or hostile participant would, and goes through :func:`inspect_image_archive` (and, for the
tag hijack, :func:`load_image_archive` into the real engine).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from arena.submissions.archive import (
    ArchiveLimits,
    InvalidImageArchive,
    inspect_image_archive,
)
from arena.submissions.loading import load_image_archive

pytestmark = pytest.mark.docker

PLATFORM_TAGS = ("python:3.11-slim",)  # plus the base image's tag (fixture)


def _build_tiny(client, tmp: Path, text: str, tag: str) -> str:
    """A ``FROM scratch`` image holding one small file (no registry, no base layers); returns its ID."""
    ctx = tmp / tag.replace("/", "_").replace(":", "_")
    ctx.mkdir()
    (ctx / "hello.txt").write_text(text)
    (ctx / "weights.bin").write_bytes(os.urandom(256 * 1024))  # incompressible, like model weights
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY hello.txt weights.bin /\nCMD ["/hello.txt"]\n')
    image, _ = client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False)
    return image.id


@pytest.fixture(scope="module")
def tiny(docker_engine, tmp_path_factory):
    """Two tiny images and the real ``docker save`` of the first: (tags, ids, archive bytes)."""
    tmp = tmp_path_factory.mktemp("tiny")
    nonce = uuid.uuid4().hex[:8]  # a fresh image ID per run (the config holds the build time anyway)
    tags = [f"arena-test/tiny-upload-a:{nonce}", f"arena-test/tiny-upload-b:{nonce}"]
    ids = [_build_tiny(docker_engine, tmp, f"tiny {i} {nonce}\n", t) for i, t in enumerate(tags)]
    saved = b"".join(docker_engine.images.get(tags[0]).save(named=tags[0]))
    yield tags, ids, saved
    for t in tags:
        try:
            docker_engine.images.remove(t)
        except docker.errors.APIError:
            pass


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [(m, t.extractfile(m).read() if m.isreg() else None) for m in t.getmembers()]


def _write(members, path: Path, compress: bool = False) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    blob = raw.getvalue()
    path.write_bytes(gzip.compress(blob, compresslevel=6) if compress else blob)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def _manifest(members) -> list[dict]:
    return json.loads(next(d for m, d in members if m.name == "manifest.json"))


def _replace(members, name: str, data: bytes):
    return [(m, data if m.name == name else d) for m, d in members]


def _refused(path: Path, fragment: str, limits: ArchiveLimits = ArchiveLimits()) -> str:
    with pytest.raises(InvalidImageArchive) as err:
        inspect_image_archive(path, limits)
    assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_real_save_is_accepted(tiny, tmp_path):
    """The baseline every bad upload below is made from."""
    tags, ids, saved = tiny
    p = tmp_path / "good.tar"
    p.write_bytes(saved)
    info = inspect_image_archive(p)
    assert info.image_id == ids[0] and info.repo_tags == [tags[0]] and info.architecture == "amd64"
    gz = tmp_path / "good.tar.gz"
    gz.write_bytes(gzip.compress(saved))
    assert inspect_image_archive(gz).image_id == ids[0]


# 1
def test_not_a_tar(tmp_path):
    p = tmp_path / "image.tar.gz"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 26 + b"Dockerfile" + b"FROM python:3.11-slim\n" * 40)  # a zip
    _refused(p, "not a tar archive (expected the output of `docker save`, optionally gzipped)")


# 2
def test_truncated_gzip(tiny, tmp_path):
    _, _, saved = tiny
    blob = gzip.compress(saved, compresslevel=1)
    p = tmp_path / "cut.tar.gz"
    p.write_bytes(blob[: len(blob) * 2 // 3])  # an upload cut off mid-way (inside the layer data)
    _refused(p, "the archive is truncated or corrupt (EOFError: Compressed file ended before the end-of-stream")


def test_truncated_after_the_last_layer(tiny, tmp_path):
    """Cut where only the small trailing entries (manifest.json, repositories) are lost."""
    _, _, saved = tiny
    with tarfile.open(fileobj=io.BytesIO(saved)) as t:
        members = t.getmembers()
    last_layer = max(i for i, m in enumerate(members) if m.name.endswith("layer.tar"))
    after = members[last_layer + 1:]
    assert {m.name for m in after} >= {"manifest.json"}  # the engine writes manifest.json after the layers
    p = tmp_path / "cut-tail.tar.gz"
    p.write_bytes(gzip.compress(saved[: after[0].offset + 100]))  # 100 bytes into the next header
    with pytest.raises(InvalidImageArchive) as err:
        inspect_image_archive(p)
    assert "truncated or corrupt" in str(err.value) and "no end-of-archive marker" in str(err.value)


# 3
def test_two_images_in_one_archive(docker_engine, tiny, tmp_path):
    tags, _, _ = tiny
    # what `docker save a b` writes: the engine's multi-image export
    resp = docker_engine.api.get(docker_engine.api._url("/images/get"), params={"names": tags}, stream=True)
    resp.raise_for_status()
    p = tmp_path / "two.tar"
    with open(p, "wb") as f:
        for chunk in resp.iter_content(1 << 20):
            f.write(chunk)
    assert len(_manifest(_members(p.read_bytes()))) == 2
    _refused(p, "the archive must hold exactly one image, manifest.json lists 2")


# 4
def test_no_manifest(tiny, tmp_path):
    _, _, saved = tiny
    members = [(m, d) for m, d in _members(saved) if m.name != "manifest.json"]  # `repositories` stays
    _refused(_write(members, tmp_path / "nomanifest.tar"), "no manifest.json: not a `docker save` archive")


# 5
@pytest.mark.parametrize("compress", [False, True])
def test_path_traversal_entry(tiny, tmp_path, compress):
    _, _, saved = tiny
    members = _members(saved) + [_file("../../etc/cron.d/arena-pwn", b"* * * * * root sh -c 'id > /tmp/pwned'\n")]
    p = _write(members, tmp_path / "traversal.tar", compress=compress)
    _refused(p, "archive entry '../../etc/cron.d/arena-pwn' points outside the archive ('..')")


# 6
@pytest.mark.parametrize("target", ["../../../../etc/shadow", "/etc/shadow"])
def test_symlink_entry_escaping_the_archive(tiny, tmp_path, target):
    _, _, saved = tiny
    members = _members(saved)
    layer_dir = _manifest(members)[0]["Layers"][0].split("/")[0]
    link = tarfile.TarInfo(f"{layer_dir}/escape")
    link.type, link.linkname = tarfile.SYMTYPE, target
    p = _write(members + [(link, None)], tmp_path / "symlink.tar")
    _refused(p, f"archive entry '{layer_dir}/escape' links outside the archive")


# 7
def test_decompression_bomb(tiny, tmp_path):
    _, _, saved = tiny
    members = _members(saved) + [_file("padding/zeros.bin", bytes(96 * 2**20))]
    p = _write(members, tmp_path / "bomb.tar.gz", compress=True)
    assert p.stat().st_size < 2**20  # ~96 MiB of zeros in well under 1 MiB: ratio ~1000
    t0 = time.monotonic()
    _refused(p, "the archive expands more than 100x (a compression bomb?)")
    assert time.monotonic() - t0 < 5  # refused from the entry's header, not after inflating it


# 8
def test_arm64_image(tiny, tmp_path):
    _, _, saved = tiny
    members = _members(saved)
    manifest = _manifest(members)
    old_name = manifest[0]["Config"]
    config = json.loads(next(d for m, d in members if m.name == old_name))
    assert config["architecture"] == "amd64"
    config["architecture"], config["variant"] = "arm64", "v8"
    new_config = json.dumps(config).encode()
    new_name = hashlib.sha256(new_config).hexdigest() + ".json"
    manifest[0]["Config"] = new_name
    rebuilt = []
    for m, d in members:
        if m.name == old_name:
            m.name, d = new_name, new_config
        elif m.name == "manifest.json":
            d = json.dumps(manifest).encode()
        rebuilt.append((m, d))
    _refused(_write(rebuilt, tmp_path / "arm64.tar"),
             "the image is built for arm64; Arena's workers run amd64 images (docker build --platform linux/amd64)")


# 9
def test_oversize(tiny, tmp_path):
    _, _, saved = tiny
    p = tmp_path / "big.tar"
    p.write_bytes(saved)
    size = sum(m.size for m, _ in _members(saved))
    _refused(p, "the archive unpacks to more than", ArchiveLimits(max_uncompressed_bytes=size - 1))
    _refused(p, "more than 3 entries in the archive", ArchiveLimits(max_members=3))


# 10
def test_platform_tags_not_hijacked(docker_engine, base_image, tiny, tmp_path):
    """An archive whose RepoTags name platform images: loading must not move those tags."""
    tags, ids, _ = tiny
    victims = [*PLATFORM_TAGS, base_image, tags[1]]
    before = {}
    for t in victims:
        try:
            before[t] = docker_engine.images.get(t).id
        except docker.errors.ImageNotFound:
            pytest.skip(f"{t} is not present on this engine")
    # A fresh tiny image, saved, then removed from the engine, so loading really loads it.
    hijacker_tag = f"arena-test/hijacker:{uuid.uuid4().hex[:8]}"
    hijacker_id = _build_tiny(docker_engine, tmp_path, f"hijack {uuid.uuid4()}\n", hijacker_tag)
    members = _members(b"".join(docker_engine.images.get(hijacker_tag).save(named=hijacker_tag)))
    docker_engine.images.remove(hijacker_tag)
    manifest = _manifest(members)
    manifest[0]["RepoTags"] = victims
    repositories = {}
    layer_id = manifest[0]["Layers"][0].split("/")[0]
    for t in victims:
        repo, _, version = t.rpartition(":")
        repositories.setdefault(repo, {})[version] = layer_id
    members = _replace(_replace(members, "manifest.json", json.dumps(manifest).encode()),
                       "repositories", json.dumps(repositories).encode())
    p = _write(members, tmp_path / "hijack.tar.gz", compress=True)

    info = inspect_image_archive(p)
    assert info.image_id == hijacker_id and info.repo_tags == victims  # described, never trusted
    submission_tag = f"arena-test/submission:hijack-{uuid.uuid4().hex[:8]}"
    try:
        loaded = load_image_archive(docker_engine, p, info, submission_tag)
        assert loaded == hijacker_id
        for t in victims:
            assert docker_engine.images.get(t).id == before[t], f"{t} was taken over"
        assert docker_engine.images.get(hijacker_id).tags == [submission_tag]
    finally:
        try:
            docker_engine.images.remove(submission_tag)
        except docker.errors.APIError:
            pass

    # Control: the same archive tagged only with a test-owned name, loaded raw (`docker load`),
    # does move the tag: the threat the stripping prevents is real on this engine.
    victim_tag = f"arena-test/victim:{uuid.uuid4().hex[:8]}"
    repo, _, version = victim_tag.rpartition(":")
    docker_engine.images.get(ids[1]).tag(repo, version)
    manifest[0]["RepoTags"] = [victim_tag]
    raw = _write(_replace(_replace(members, "manifest.json", json.dumps(manifest).encode()),
                          "repositories", json.dumps({repo: {version: layer_id}}).encode()),
                 tmp_path / "control.tar")
    try:
        docker_engine.images.load(raw.read_bytes())
        assert docker_engine.images.get(victim_tag).id == hijacker_id
    finally:
        for t in (victim_tag, hijacker_id):
            try:
                docker_engine.images.remove(t)
            except docker.errors.APIError:
                pass

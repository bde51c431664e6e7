"""Arena's registry-free images: base image build, Dockerfile builds, docker save."""

from __future__ import annotations

import gzip
import os
import sys
import tarfile
import uuid

import pytest

from arena.images import base as base_mod
from arena.images.build import ImageBuildError, build_image, save_image
from arena.images.docker_client import DockerUnavailable, docker_client

# Also imported by tests/conftest.py for the other suites; importing here keeps this module
# self-contained (the fixtures are idempotent: the image is built once per machine).
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # also works under --import-mode=importlib
    sys.path.insert(0, _HERE)
from fixtures_docker import base_image, docker_engine  # noqa: E402,F401


# ---------------------------------------------------------------- no engine needed


def test_docker_client_error_names_docker_host(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-here.sock")
    with pytest.raises(DockerUnavailable) as exc_info:
        docker_client(timeout=5)
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, RuntimeError)
    assert "DOCKER_HOST=unix://" in msg and "dockerd" in msg


def test_debian_sources_from_deb822_and_one_line(monkeypatch):
    monkeypatch.delenv("ARENA_DEBIAN_MIRROR", raising=False)
    deb822 = base_mod._parse_deb822(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert base_mod.debian_sources("bookworm", deb822) == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    one_line = base_mod._parse_one_line(
        "deb [signed-by=/x.gpg] http://m.example/debian trixie main\n# deb http://no.example/debian bookworm main\n"
        "deb https://packages.example.com/apt cloud-sdk main\n"
    )
    # no entry for bookworm itself: reuse a host Debian mirror with the right suite
    assert base_mod.debian_sources("bookworm", one_line) == ["deb http://m.example/debian bookworm main"]
    assert base_mod.debian_sources("bookworm", []) == [f"deb {base_mod.FALLBACK_MIRROR} bookworm main"]
    monkeypatch.setenv("ARENA_DEBIAN_MIRROR", "http://local.example/debian/")
    assert base_mod.debian_sources("bookworm", deb822) == ["deb http://local.example/debian bookworm main"]


# ---------------------------------------------------------------- engine needed


@pytest.mark.docker
@pytest.mark.slow
def test_base_image_runs_numpy_and_simpleitk(docker_engine, base_image):
    out = docker_engine.containers.run(
        base_image,
        ["python3", "-c", "import numpy, SimpleITK; print(numpy.__version__, SimpleITK.Version.MajorVersion())"],
        network_mode="none",
        remove=True,
        stdout=True,
        stderr=True,
        use_config_proxy=False,
    )
    numpy_version, sitk_major = out.decode().split()
    assert int(numpy_version.split(".")[0]) >= 1
    assert int(sitk_major) >= 2

    image = docker_engine.images.get(base_image)
    assert image.labels.get("org.arena.base") == "1"
    env = image.attrs["Config"]["Env"]
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "LANG=C.UTF-8" in env
    assert image.attrs["Config"]["Cmd"] == ["python3"]
    # third-party Dockerfiles with FROM python:3.11-slim build unchanged
    docker_engine.images.get(base_mod.PYTHON_ALIAS)


@pytest.mark.docker
@pytest.mark.slow
def test_build_and_save_image(docker_engine, base_image, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.py").write_text("import numpy\nprint('hello from', numpy.__name__)\n")
    (ctx / "Dockerfile").write_text(
        "ARG BASE_IMAGE=python:3.11-slim\n"
        "FROM ${BASE_IMAGE}\n"
        "COPY hello.py /opt/hello.py\n"
        'RUN python3 -c "import SimpleITK"\n'
        'CMD ["python3", "/opt/hello.py"]\n'
    )
    tag = f"arena-test/tiny:{uuid.uuid4().hex[:12]}"
    lines: list[str] = []
    try:
        image_id = build_image(str(ctx), tag, base_image, log=lines.append)
        assert image_id.startswith("sha256:")
        assert any("Step" in line or "COPY" in line for line in lines), lines
        out = docker_engine.containers.run(tag, network_mode="none", remove=True, use_config_proxy=False)
        assert out.decode().strip() == "hello from numpy"

        dest = save_image(tag, str(tmp_path / "out" / "tiny.tar.gz"))
        with open(dest, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"  # gzip magic
        with tarfile.open(dest, mode="r:gz") as tar:
            names = tar.getnames()
        assert "manifest.json" in names
        assert not (tmp_path / "out" / "tiny.tar.gz.part").exists()

        plain = save_image(image_id, str(tmp_path / "tiny.tar"), compress=False)
        with tarfile.open(plain, mode="r:") as tar:
            assert "manifest.json" in tar.getnames()
        with pytest.raises(gzip.BadGzipFile):
            with gzip.open(plain) as g:
                g.read(1)
    finally:
        try:
            docker_engine.images.remove(tag, force=True)
        except Exception:
            pass


@pytest.mark.docker
@pytest.mark.slow
def test_build_failure_reports_log_tail(docker_engine, base_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about-to-fail && exit 3\n"
    )
    tag = f"arena-test/broken:{uuid.uuid4().hex[:12]}"
    with pytest.raises(ImageBuildError) as exc_info:
        build_image(str(tmp_path), tag, base_image, log=lambda line: None)
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, RuntimeError)
    assert tag in msg and "about-to-fail" in msg

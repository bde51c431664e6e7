"""ImageCache: an LRU of submission images on a worker, with a shared, locked state file."""

from __future__ import annotations

import io
import json
import multiprocessing
import uuid

import docker.errors
import pytest

from arena.runner.image_cache import ImageCache

LABEL = "arena.test"


def _present(client, image_id: str) -> bool:
    try:
        client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.fixture
def test_images(docker_engine, base_image):
    """Build tiny images FROM the base image under a throw-away repo; remove all of it afterwards."""
    rand = uuid.uuid4().hex[:10]
    repo = f"arena-test-cache/{rand}"
    built: list[str] = []
    extra_tags: list[str] = []
    containers = []

    def build(n: int, *tags: str) -> str:
        dockerfile = f"FROM {base_image}\nLABEL {LABEL}=cache {LABEL}.n={n}-{rand}\n".encode()
        image, _ = docker_engine.images.build(fileobj=io.BytesIO(dockerfile), custom_context=False, rm=True,
                                              pull=False, labels={LABEL: "cache"})
        built.append(image.id)
        for t in tags or (f"{repo}:test-{n}-{rand}",):
            r, _, v = t.rpartition(":")
            image.tag(r, v)
            if r != repo:
                extra_tags.append(t)
        return image.id

    class Ctx:
        pass

    ctx = Ctx()
    ctx.repo, ctx.rand, ctx.build, ctx.containers = repo, rand, build, containers
    try:
        yield ctx
    finally:
        for c in containers:
            try:
                c.remove(force=True)
            except docker.errors.APIError:
                pass
        for img in docker_engine.api.images(name=repo):
            for t in img.get("RepoTags") or []:
                try:
                    docker_engine.images.remove(t, force=True)
                except docker.errors.APIError:
                    pass
        for t in extra_tags:
            try:
                docker_engine.images.remove(t, force=True)
            except docker.errors.APIError:
                pass
        for image_id in built:
            try:
                docker_engine.images.remove(image_id, force=True)
            except docker.errors.APIError:
                pass


def _size(client, image_id: str) -> int:
    return int(client.api.inspect_image(image_id)["Size"])


@pytest.mark.docker
def test_lru_eviction_untouched_first_and_keep(docker_engine, test_images, tmp_path):
    a, b, c = (test_images.build(n) for n in range(3))
    assert len({a, b, c}) == 3
    size = _size(docker_engine, a)
    cache = ImageCache(docker_engine, tmp_path / "cache.json", budget_bytes=int(2.5 * size), repo=test_images.repo)
    assert cache.usage_bytes() == 3 * size
    cache.touch(c)
    cache.touch(a)  # b never touched: the oldest
    assert cache.evict() == [b]
    assert not _present(docker_engine, b) and _present(docker_engine, a) and _present(docker_engine, c)
    assert cache.usage_bytes() == 2 * size
    assert cache.evict() == []  # within budget: nothing to do

    cache.budget_bytes = int(1.5 * size)
    assert cache.evict(keep=[c]) == [a]  # c is older, but kept
    assert _present(docker_engine, c) and not _present(docker_engine, a)
    state = json.loads((tmp_path / "cache.json").read_text())
    assert set(state["last_used"]) == {c}  # removed images are forgotten


@pytest.mark.docker
def test_image_of_a_stopped_container_is_not_removed(docker_engine, test_images, tmp_path, base_image):
    a, b, c = (test_images.build(n) for n in range(3))
    size = _size(docker_engine, a)
    cache = ImageCache(docker_engine, tmp_path / "cache.json", budget_bytes=int(1.5 * size), repo=test_images.repo)
    for image_id in (a, b, c):
        cache.touch(image_id.removeprefix("sha256:"))  # bare hex works too
    ctr = docker_engine.containers.create(a, command=["true"], network_mode="none", labels={LABEL: "cache"})
    test_images.containers.append(ctr)
    ctr.start()
    ctr.wait(timeout=60)
    removed = cache.evict(keep=[c])
    assert removed == [b]  # a is the LRU, but a (stopped) container uses it
    assert _present(docker_engine, a) and _present(docker_engine, c) and not _present(docker_engine, b)
    assert _present(docker_engine, base_image)  # never a repo image


@pytest.mark.docker
def test_tags_several_ours_vs_foreign(docker_engine, test_images, tmp_path):
    repo, rand = test_images.repo, test_images.rand
    twice = test_images.build(0, f"{repo}:sub-1-{rand}", f"{repo}:sub-2-{rand}")  # one image, two submissions
    shared = test_images.build(1, f"{repo}:sub-3-{rand}", f"arena-test-cache-other/{rand}:x")
    fresh = test_images.build(2)
    size = _size(docker_engine, twice)
    cache = ImageCache(docker_engine, tmp_path / "state" / "cache.json", budget_bytes=int(0.5 * size), repo=repo)
    cache.touch(fresh)
    removed = cache.evict()
    # untouched first (by Created): `twice` goes; `shared` has a tag outside the repo: refused, kept;
    # then `fresh` goes as the budget still is not met.
    assert twice in removed and fresh in removed and shared not in removed
    assert not _present(docker_engine, twice) and _present(docker_engine, shared)


def _touch_many(state_path: str, worker: int, n: int) -> None:
    cache = ImageCache(None, state_path, budget_bytes=0, repo="arena-test/touch")
    for i in range(n):
        cache.touch(f"sha256:{worker:032x}{i:032x}")


def test_touch_is_safe_across_processes(tmp_path):
    state = tmp_path / "cache.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_touch_many, args=(str(state), w, 25)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    used = json.loads(state.read_text())["last_used"]
    assert len(used) == 150  # no lost update
    assert not list(tmp_path.glob("*.tmp"))


def test_two_instances_tag_their_images_apart(tmp_path):
    """Two Arena instances on one engine (two ARENA_HOMEs) tag submission n differently, and each one's
    cache only ever considers its own repository; one instance's processes agree on its id."""
    from arena.config import load_settings
    from arena.submissions.loading import submission_repo, submission_tag

    a = load_settings({"ARENA_HOME": str(tmp_path / "a")})
    b = load_settings({"ARENA_HOME": str(tmp_path / "b")})
    assert a.instance_id() == load_settings({"ARENA_HOME": str(tmp_path / "a")}).instance_id()
    assert submission_tag(a.instance_id(), 1) != submission_tag(b.instance_id(), 1)
    assert submission_tag(a.instance_id(), 1).startswith(submission_repo(a.instance_id()) + ":")
    assert (tmp_path / "a" / ".instance_id").read_text().strip() == a.instance_id()

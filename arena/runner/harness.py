"""`arena try`: run an algorithm locally exactly as the platform would, on a task's sample cases.

Same code path as the workers (evaluate_case / evaluate_batch with the task's limits), so "works
locally, fails on the platform" does not happen. Sample cases come from ``<task>/samples/<case>/``
(``image.*`` + ``reference.*``; volumes are checked and converted to the task's input format, .mha,
as loaded cases are); a CT task without samples gets phantoms from its synthetic data
generator (``data.generator`` or the one matching its label map: han-oar-22, han-oar-9, thorax).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from arena.kinds import kind_for
from arena.runner.evaluate import CaseInput, CaseOutcome, evaluate_batch, evaluate_case, limits_for
from arena.tasks import convert
from arena.tasks.case_check import check_case
from arena.tasks.spec import TaskSpec, load_spec


@dataclass
class TryResult:
    image_id: str
    cases: list[tuple[str, CaseOutcome]]
    docker_run: str  # the equivalent command line for one case


def sample_cases(task_dir: Path, spec: TaskSpec, n: int, size: str, scratch: Path) -> list[CaseInput]:
    """The first ``n`` (0: all) sample cases of ``task_dir/samples/<case>/`` (``image.*`` + ``reference.*``, or
    ``image/`` as a DICOM series folder), else generated phantoms. Volumes are checked like loaded cases
    (:func:`arena.tasks.case_check.check_case`) and, unless already in the task's input format on one grid,
    converted into ``scratch`` exactly as the case store converts them (.mha for most tasks), so that the
    container sees what it will see on the platform."""
    samples = Path(task_dir) / "samples"
    kind = kind_for(spec)
    found = []
    if samples.is_dir():
        for d in sorted(p for p in samples.iterdir() if p.is_dir()):
            img = next(iter(sorted(d.glob("image*"))), None)
            ref = next(iter(sorted(d.glob("reference.*"))), None)
            if img and ref:
                found.append(CaseInput(d.name, img, ref))
        if found:
            found = found[:n] if n else found
            return [_as_platform_case(spec, c, scratch) for c in found] if kind.volumetric else found
    out = []
    try:
        # the demo's seeds and strata: the cases `arena demo` / `task load --demo-data` generate
        for i, stratum in enumerate(kind.demo_strata(spec, n or 2)):
            demo = kind.write_demo_case(spec, scratch, f"sample-{i:03d}", i, size, stratum)
            out.append(CaseInput(f"sample-{i:03d}", demo.image, demo.reference))
    except ValueError as e:  # no generator for its label map
        raise ValueError(f"task {spec.slug} has no sample cases in {samples}/<case>/image.* + reference.* and "
                         f"no synthetic data generator ({e})") from None
    return out


def _as_platform_case(spec: TaskSpec, case: CaseInput, scratch: Path) -> CaseInput:
    """A sample volume checked and, when needed, converted into ``scratch/samples/<case>/`` in the task's
    input format (what :func:`arena.tasks.store.add_case` stores); CaseCheckError (a ValueError) naming the
    file on a problem."""
    report = check_case(case.key, case.image, case.reference, spec.labels)
    fmt = next((f for f in spec.inputs[0].formats if f in convert.OUTPUT_FORMATS), "mha")
    ext = convert.OUTPUT_FORMATS[fmt]
    if (Path(case.image).is_file() and convert.suffix(case.image) == ext and convert.suffix(case.reference) == ext
            and convert.same_grid(report.geometry, report.reference_geometry, tol=0.0)):
        return case
    img, ref, _ = convert.convert_case(case.image, case.reference, Path(scratch) / "samples" / case.key, fmt)
    return CaseInput(case.key, img, ref)


def resolve_image(client, image_or_tarball: str, log: Callable[[str], None]) -> str:
    """A local image ID: load a docker-save tarball (tags stripped, checked as uploads are) or look up a name."""
    path = Path(image_or_tarball)
    if path.is_file():
        from arena.submissions.archive import inspect_image_archive
        from arena.submissions.loading import load_image_archive

        info = inspect_image_archive(path)
        log(f"archive ok: image {info.image_id[:19]}, user {info.user or 'root (will run as nobody)'}, "
            f"{info.uncompressed_bytes / 1e6:.0f} MB")
        return load_image_archive(client, path, info, f"arena/try:{info.image_id[7:19]}", log=log)
    import docker.errors

    try:
        return client.images.get(image_or_tarball).id
    except docker.errors.ImageNotFound:
        raise ValueError(f"no local image and no file named {image_or_tarball!r}") from None


def try_image(image_or_tarball: str, task_dir: Path, n_cases: int = 2, size: str = "small",
              log: Callable[[str], None] = print, progress: Callable[[int, int, str], None] | None = None) -> TryResult:
    """Run the image on the task's sample cases under the task's limits; return each case's outcome."""
    from arena.images.docker_client import docker_client
    from arena.runner.gpu import worker_device_ids
    from arena.runner.identity import effective_user
    from arena.runner.sandbox import docker_run_command

    spec = load_spec(task_dir)
    client = docker_client()
    image_id = resolve_image(client, image_or_tarball, log)
    gpus = tuple(worker_device_ids()) if spec.resources.gpu else ()
    limits = limits_for(spec, gpus)
    with tempfile.TemporaryDirectory(prefix="arena-try-") as tmp:
        tmp = Path(tmp)
        cases = sample_cases(task_dir, spec, n_cases, size, tmp / "cases")
        labels = {"arena.try": "1"}
        results: list[tuple[str, CaseOutcome]] = []
        if spec.io_mode == "batch":
            from dataclasses import replace

            outs = evaluate_batch(client, spec, image_id, cases, tmp / "work", tmp / "results",
                                  replace(limits, time_s=limits.time_s * len(cases)), labels)
            results = [(c.key, o) for c, o in zip(cases, outs)]
        else:
            for i, c in enumerate(cases):
                if progress:
                    progress(i, len(cases), c.key)
                results.append((c.key, evaluate_case(client, spec, image_id, c.key, c.image, c.reference,
                                                     tmp / "work" / c.key, tmp / "results" / c.key, limits, labels)))
        user = effective_user(client.images.get(image_id).attrs.get("Config", {}).get("User", ""))
    cmd = docker_run_command(image_id, limits, user, "$PWD/input", "$PWD/output")
    return TryResult(image_id, results, cmd)

"""Evaluating cases: lay out /input, run the sandbox (per case or once in batch mode), collect and check
/output, score it.

The lifecycle of a case: provision its input (a random folder, :func:`arena.runner.contract.run_area`),
execute the container (:func:`arena.runner.sandbox.run_sandboxed`), collect the declared outputs, check
and score them, deprovision. Everything that depends on the kind of task — reading the reference, finding
and checking the outputs, scoring, what a failed case scores — is asked of the task's kind
(:func:`arena.kinds.kind_for`; volumes in ``arena/kinds/volume.py``, tiles in ``arena/kinds/tiles.py``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from arena.config import default_run_root
from arena.kinds import kind_for
from arena.runner.collect import CollectError, collect_outputs
from arena.runner.contract import (
    OutputError,
    declared_output,
    opaque_name,
    output_area,
    prepare_case_input,
    run_area,
)
from arena.runner.failures import Failure
from arena.runner.outcome import CaseOutcome
from arena.runner.sandbox import SandboxLimits, run_sandboxed
from arena.tasks.spec import TaskSpec


def limits_for(spec: TaskSpec, gpu_device_ids: tuple[str, ...] = ()) -> SandboxLimits:
    r = spec.resources
    return SandboxLimits(time_s=r.time_per_case_s, memory_mb=r.memory_mb, cpus=r.cpus, pids=r.pids,
                         shm_mb=r.shm_mb, tmp_mb=r.tmp_mb, file_mb=r.output_mb,
                         gpu_device_ids=gpu_device_ids if r.gpu else ())


def load_reference(spec: TaskSpec, reference_path: Path, image_path: Path | None = None):
    """The case's reference, as its task's kind reads it (a SimpleITK image, a tile's boxes or mask)."""
    return kind_for(spec).load_reference(spec, Path(reference_path), image_path)


def empty_prediction(spec: TaskSpec, reference):
    """What a failed case is scored as (the kind's: an all-background volume, no tile output at all)."""
    return kind_for(spec).empty_prediction(spec, reference)


def score_case(spec: TaskSpec, prediction, reference) -> dict[int, dict[str, float | None]]:
    """Score one case's prediction against its reference with each metric's own options (the kind's)."""
    return kind_for(spec).score_case(spec, prediction, reference)


def output_nearly_full(path: Path, size_mb: int) -> bool:
    """True when the /output filesystem has (almost) no space left, or holds more than ``size_mb``."""
    import os

    try:
        st = os.statvfs(path)
    except OSError:
        return False
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    inodes_full = st.f_files > 0 and st.f_favail < 16  # the tmpfs's nr_inodes cap (a file-count bomb)
    return st.f_bavail * st.f_frsize < 64 * 1024 or used >= size_mb * 2**20 or inodes_full


@dataclass
class CaseInput:
    key: str  # case id (the batch-mode folder name)
    image: Path  # the case image in the case store
    reference: Path  # its reference label map


def _run_once(client, image: str, input_dir: Path, out_dir: Path, results_dir: Path, output_mb: int,
              limits: SandboxLimits, labels: dict[str, str], keep: Callable[[str], bool] | None = None,
              mounts: dict[str, tuple[str, str]] | None = None):
    """Run the container once over ``input_dir``; collect the declared outputs (``keep``) of /output into
    ``results_dir``, counting and discarding the rest (a line in the case log says how much).

    Returns the RunResult with its error/failure refined: a full /output or a SIGXFSZ exit is
    "output too large"; an over-cap /output found while collecting likewise.
    """
    with output_area(out_dir, output_mb) as out:
        run = run_sandboxed(client, image, mounts={"/input": (str(input_dir), "ro"), "/output": (str(out), "rw"),
                                                   **(mounts or {})}, limits=limits, labels=labels)
        full = output_nearly_full(out, output_mb)
        try:
            collected = collect_outputs(out, results_dir, max_bytes=output_mb * 2**20, keep=keep)
        except CollectError as e:
            collected = None
            run.error, run.failure = run.error or str(e), Failure.OUTPUT_TOO_LARGE
    if run.error and run.failure == Failure.NON_ZERO_EXIT and (full or run.exit_code == 153):
        # 153 = 128 + SIGXFSZ: a file over the size limit; a full /output makes writes fail
        run.error = f"output too large: /output is limited to {output_mb} MB and 20000 files ({run.error})"
        run.failure = Failure.OUTPUT_TOO_LARGE
    run.skipped = list(collected.skipped) if collected else []
    if run.skipped:
        run.logs += f"\n[arena] not collected: {', '.join(run.skipped[:10])}"
    if collected and collected.discarded:
        run.logs += (f"\n[arena] discarded {len(collected.discarded)} file(s), {collected.discarded_bytes / 2**20:.1f} MB, "
                     f"that are not declared outputs: {', '.join(collected.discarded[:5])}"
                     + (" ..." if len(collected.discarded) > 5 else ""))
        run.skipped += [f"{d} (not a declared output)" for d in collected.discarded[:20]]
    return run


def check_case_output(spec: TaskSpec, case_results: Path, reference, outcome: CaseOutcome,
                      skipped: Sequence[str] = ()):
    """The checked prediction of one case (the kind finds and reads its outputs in ``case_results``); when
    an output is missing or broken, the kind's empty prediction with ``outcome.error`` set. Warnings the
    kind raises go into the case log."""
    kind = kind_for(spec)
    warnings: list[str] = []
    try:
        path = kind.find_output(spec, case_results, skipped)
        outcome.output_path = str(path)
        prediction = kind.read_output(spec, path, case_results, reference, skipped, warnings)
    except OutputError as e:
        outcome.error, outcome.failure = str(e), e.failure
        return kind.empty_prediction(spec, reference)
    outcome.log_tail += "".join(f"\n[arena] warning: {w}" for w in warnings)
    outcome.ok = True
    return prediction


def evaluate_case(client, spec: TaskSpec, image: str, case_key: str, case_image: Path, case_reference: Path,
                  work_dir: Path, results_dir: Path, limits: SandboxLimits, labels: dict[str, str],
                  run_root: Path | None = None, mounts: dict[str, tuple[str, str]] | None = None) -> CaseOutcome:
    """Run ``image`` on one case (per-case mode) and score what it wrote.

    A case that fails (container error, no or malformed output) is scored as an empty prediction,
    so every organ present in the reference counts as missed under the task's empty policy; the
    outcome says why it failed (``error`` in words, ``failure`` as a class). The declared outputs are
    kept under ``results_dir`` for inspection. The container's /input and /output live in a random
    folder below ``run_root`` (default :func:`arena.config.default_run_root`); ``work_dir`` only marks it.
    ``mounts``: more read-only mounts (container path → (host path, mode)), e.g. the model at /opt/ml/model.
    """
    reference = load_reference(spec, case_reference, case_image)
    outcome = CaseOutcome(ok=False)
    with run_area(work_dir, run_root or default_run_root()) as run_dir:
        prepare_case_input(spec, case_image, run_dir / "input")
        run = _run_once(client, image, run_dir / "input", run_dir / "output", results_dir,
                        spec.resources.output_mb, limits, labels, keep=lambda rel: declared_output(spec, rel),
                        mounts=mounts)
    outcome.exit_code, outcome.runtime_s, outcome.log_tail = run.exit_code, run.runtime_s, run.logs
    outcome.stats = dict(run.stats)
    if run.error:
        outcome.error, outcome.failure = run.error, run.failure
        prediction = empty_prediction(spec, reference)
    else:
        prediction = check_case_output(spec, results_dir, reference, outcome, run.skipped)
    outcome.scores = score_case(spec, prediction, reference)
    return outcome


def evaluate_batch(client, spec: TaskSpec, image: str, cases: list[CaseInput], work_dir: Path, results_dir: Path,
                   limits: SandboxLimits, labels: dict[str, str], run_root: Path | None = None,
                   mounts: dict[str, tuple[str, str]] | None = None) -> list[CaseOutcome]:
    """Run ``image`` once over all ``cases`` (batch mode) and score each case's output.

    Layout: ``/input/<case-id>/...`` per case (the per-case layout inside), outputs at
    ``/output/<case-id>/...``; a case id is a random name (never the case key), mapped back here. The
    time limit is the per-case limit × the number of cases (already in ``limits``); /output may hold
    ``output_mb`` per case. A case with a valid output is scored even if the run failed later; a case
    without one gets the run's failure (or "invalid output"). Runtime and resource figures are the run's,
    shared equally among the cases. Outputs are kept under ``results_dir/<case key>/``.
    """
    ids = {c.key: opaque_name() for c in cases}
    keys = {v: k for k, v in ids.items()}

    def keep(rel: str) -> bool:
        case_id, _, below = rel.partition("/")
        return case_id in keys and declared_output(spec, below)

    with run_area(work_dir, run_root or default_run_root()) as run_dir:
        for c in cases:
            prepare_case_input(spec, c.image, run_dir / "input" / ids[c.key])
        run = _run_once(client, image, run_dir / "input", run_dir / "output", results_dir,
                        spec.resources.output_mb * max(1, len(cases)), limits, labels, keep=keep, mounts=mounts)
    for case_id, key in keys.items():  # results under the case keys, as in per-case mode
        if (results_dir / case_id).is_dir():
            shutil.rmtree(results_dir / key, ignore_errors=True)
            (results_dir / case_id).rename(results_dir / key)
    run.skipped = [_with_key(s, keys) for s in run.skipped]
    n = max(1, len(cases))
    share = {k: (v / n if k == "cpu_s" and v is not None else v)
             for k, v in run.stats.items()}
    outcomes = []
    for c in cases:
        reference = load_reference(spec, c.reference, c.image)
        outcome = CaseOutcome(ok=False, exit_code=run.exit_code, runtime_s=run.runtime_s / n, log_tail=run.logs,
                              stats=dict(share))
        prediction = check_case_output(spec, results_dir / c.key, reference, outcome,
                                        [x for x in run.skipped if x.startswith(f"{c.key}/")])
        if not outcome.ok and run.error and "no output" in (outcome.error or ""):
            outcome.error, outcome.failure = run.error, run.failure
        outcome.scores = score_case(spec, prediction, reference)
        outcomes.append(outcome)
    return outcomes


def _with_key(entry: str, keys: dict[str, str]) -> str:
    """``<case-id>/rest (why)`` with the random case id replaced by its case key (other entries unchanged)."""
    case_id, sep, rest = entry.partition("/")
    return f"{keys[case_id]}{sep}{rest}" if case_id in keys else entry


def skipped_case(spec: TaskSpec, reference_path: Path, failure: Failure, reason: str) -> CaseOutcome:
    """A case that was not run (fail-fast, evaluation timeout, no GPU): scored as an empty prediction."""
    reference = load_reference(spec, reference_path)
    outcome = CaseOutcome(ok=False, error=reason, failure=failure)
    outcome.scores = score_case(spec, empty_prediction(spec, reference), reference)
    return outcome

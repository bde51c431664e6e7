"""Evaluating cases: lay out /input, run the sandbox (per case or once in batch mode), collect and check
/output, score it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.metrics import EmptyPolicy, score_segmentation
from arena.runner.collect import CollectError, collect_outputs
from arena.runner.contract import OutputError, find_segmentation_output, output_area, prepare_case_input
from arena.runner.failures import Failure
from arena.runner.output_check import read_checked_output
from arena.runner.sandbox import SandboxLimits, run_sandboxed
from arena.tasks.spec import TaskSpec


@dataclass
class CaseOutcome:
    ok: bool
    error: str | None = None
    failure: Failure | None = None
    exit_code: int | None = None
    runtime_s: float | None = None
    log_tail: str = ""
    output_path: str | None = None
    scores: dict[int, dict[str, float | None]] = field(default_factory=dict)
    stats: dict[str, float | int | None] = field(default_factory=dict)  # cpu_s, peak_memory_mb, ... (CaseResult columns)


def limits_for(spec: TaskSpec, gpu_device_ids: tuple[str, ...] = ()) -> SandboxLimits:
    r = spec.resources
    return SandboxLimits(time_s=r.time_per_case_s, memory_mb=r.memory_mb, cpus=r.cpus, pids=r.pids,
                         shm_mb=r.shm_mb, tmp_mb=r.tmp_mb, file_mb=r.output_mb,
                         gpu_device_ids=gpu_device_ids if r.gpu else ())


def empty_policy_for(spec: TaskSpec) -> EmptyPolicy:
    return EmptyPolicy(both_empty=spec.empty_policy.both_empty,
                       one_empty_distance=spec.empty_policy.one_empty_distance)


def score_case(spec: TaskSpec, prediction: np.ndarray, reference: sitk.Image) -> dict[int, dict[str, float | None]]:
    """Score a prediction array (z, y, x) against the reference image with each metric's own options.

    Metrics that share (convention, percentile, tolerance) are computed in one pass.
    """
    groups: dict[tuple[str, float, float], list[str]] = {}
    for m in spec.metrics:
        groups.setdefault((m.convention, m.percentile, m.tolerance_mm), []).append(m.name)
    ref = sitk.GetArrayViewFromImage(reference)
    out: dict[int, dict[str, float | None]] = {lab: {} for lab in spec.labels}
    for (convention, percentile, tolerance), names in groups.items():
        scores = score_segmentation(prediction, ref, reference.GetSpacing()[::-1], list(spec.labels),
                                    convention=convention, percentile=percentile, tolerance_mm=tolerance,
                                    empty_policy=empty_policy_for(spec))
        for lab, vals in scores.items():
            out[lab].update({k: vals[k] for k in names})
    return out


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
              limits: SandboxLimits, labels: dict[str, str]):
    """Run the container once over ``input_dir``; collect /output into ``results_dir``.

    Returns the RunResult with its error/failure refined: a full /output or a SIGXFSZ exit is
    "output too large"; an over-cap /output found while collecting likewise.
    """
    with output_area(out_dir, output_mb) as out:
        run = run_sandboxed(client, image, mounts={"/input": (str(input_dir), "ro"), "/output": (str(out), "rw")},
                            limits=limits, labels=labels)
        full = output_nearly_full(out, output_mb)
        try:
            collected = collect_outputs(out, results_dir, max_bytes=output_mb * 2**20)
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
    return run


def _check_case_output(spec: TaskSpec, case_results: Path, reference: sitk.Image, outcome: CaseOutcome,
                       skipped: list[str] = ()) -> np.ndarray:
    """The checked prediction array of one case, or an all-background array with outcome.error set."""
    try:
        path = find_segmentation_output(case_results, spec, skipped)
        outcome.output_path = str(path)
        prediction = read_checked_output(path, reference, set(spec.labels))
        outcome.ok = True
        return prediction
    except OutputError as e:
        outcome.error, outcome.failure = str(e), e.failure
        return np.zeros(reference.GetSize()[::-1], dtype=np.uint8)


def evaluate_case(client, spec: TaskSpec, image: str, case_key: str, case_image: Path, case_reference: Path,
                  work_dir: Path, results_dir: Path, limits: SandboxLimits, labels: dict[str, str]) -> CaseOutcome:
    """Run ``image`` on one case (per-case mode) and score what it wrote.

    A case that fails (container error, no or malformed output) is scored as an empty prediction,
    so every organ present in the reference counts as missed under the task's empty policy; the
    outcome says why it failed (``error`` in words, ``failure`` as a class). Outputs are kept under
    ``results_dir`` for inspection.
    """
    reference = sitk.ReadImage(str(case_reference))
    outcome = CaseOutcome(ok=False)
    try:
        prepare_case_input(spec, case_image, work_dir / "input", original_name=f"{case_key}{case_image.suffix}")
        run = _run_once(client, image, work_dir / "input", work_dir / "output", results_dir,
                        spec.resources.output_mb, limits, labels)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    outcome.exit_code, outcome.runtime_s, outcome.log_tail = run.exit_code, run.runtime_s, run.logs
    outcome.stats = dict(run.stats)
    if run.error:
        outcome.error, outcome.failure = run.error, run.failure
        prediction = np.zeros(reference.GetSize()[::-1], dtype=np.uint8)
    else:
        prediction = _check_case_output(spec, results_dir, reference, outcome, run.skipped)
    outcome.scores = score_case(spec, prediction, reference)
    return outcome


def evaluate_batch(client, spec: TaskSpec, image: str, cases: list[CaseInput], work_dir: Path, results_dir: Path,
                   limits: SandboxLimits, labels: dict[str, str]) -> list[CaseOutcome]:
    """Run ``image`` once over all ``cases`` (batch mode) and score each case's output.

    Layout: ``/input/<case-id>/...`` per case (the per-case layout inside), outputs at
    ``/output/<case-id>/...``. The time limit is the per-case limit × the number of cases (already
    in ``limits``); /output may hold ``output_mb`` per case. A case with a valid output is scored even
    if the run failed later; a case without one gets the run's failure (or "invalid output").
    Runtime and resource figures are the run's, shared equally among the cases.
    """
    try:
        for c in cases:
            prepare_case_input(spec, c.image, work_dir / "input" / c.key, original_name=f"{c.key}{c.image.suffix}")
        run = _run_once(client, image, work_dir / "input", work_dir / "output", results_dir,
                        spec.resources.output_mb * max(1, len(cases)), limits, labels)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    n = max(1, len(cases))
    share = {k: (v / n if k == "cpu_s" and v is not None else v)
             for k, v in run.stats.items()}
    outcomes = []
    for c in cases:
        reference = sitk.ReadImage(str(c.reference))
        outcome = CaseOutcome(ok=False, exit_code=run.exit_code, runtime_s=run.runtime_s / n, log_tail=run.logs,
                              stats=dict(share))
        prediction = _check_case_output(spec, results_dir / c.key, reference, outcome,
                                        [x for x in run.skipped if x.startswith(f"{c.key}/")])
        if not outcome.ok and run.error and "no output" in (outcome.error or ""):
            outcome.error, outcome.failure = run.error, run.failure
        outcome.scores = score_case(spec, prediction, reference)
        outcomes.append(outcome)
    return outcomes


def skipped_case(spec: TaskSpec, reference_path: Path, failure: Failure, reason: str) -> CaseOutcome:
    """A case that was not run (fail-fast, evaluation timeout, no GPU): scored as an empty prediction."""
    reference = sitk.ReadImage(str(reference_path))
    outcome = CaseOutcome(ok=False, error=reason, failure=failure)
    outcome.scores = score_case(spec, np.zeros(reference.GetSize()[::-1], dtype=np.uint8), reference)
    return outcome

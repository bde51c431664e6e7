"""Evaluating cases: lay out /input, run the sandbox (per case or once in batch mode), collect and check
/output, score it.

Two families of tasks share this path:

- volumes (CT, ...): the reference is a label image; the output one label image of the same geometry;
  scores are per label (:func:`score_case`).
- tiles (``modality: pathology``): the input is a TIFF tile, the reference a ground-truth box JSON
  (``kind: detection``) or a 2-D lesion mask (``kind: segmentation``). Detection outputs are
  grand-challenge "Multiple 2D bounding boxes" JSON; segmentation tiles may add an image-level
  probability (a ``value`` output). Per case Arena stores what the set-level metrics need, as
  MetricValue rows of label 1 (see :func:`score_tile_case`); the board computes DigestPath's recall at
  precision > 0.2, normal-region FP score and FROC, and the AUC, over the whole phase.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from arena.metrics import EmptyPolicy, score_segmentation
from arena.runner.collect import CollectError, collect_outputs
from arena.config import default_run_root
from arena.runner.contract import (
    OutputError,
    declared_output,
    find_file_output,
    find_segmentation_output,
    find_tile_mask_output,
    opaque_name,
    output_area,
    prepare_case_input,
    run_area,
)
from arena.runner.failures import Failure
from arena.runner.output_check import (
    read_checked_boxes,
    read_checked_output,
    read_checked_tile_mask,
    read_checked_value,
)
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
                       one_empty_distance=spec.empty_policy.one_empty_distance,
                       reference_empty=spec.empty_policy.reference_empty)


@dataclass
class TileReference:
    """A tile task's ground truth: boxes (detection) or a lesion mask (segmentation), and the tile size."""

    width: int
    height: int
    boxes: object = None  # pandas DataFrame image, x0, y0, x1, y1 (detection)
    mask: np.ndarray | None = None  # (H, W) uint8 (segmentation)

    @property
    def target(self) -> int:
        """Image-level truth: 1 when the tile holds a target (cells, lesion)."""
        if self.mask is not None:
            return int(bool(self.mask.any()))
        return int(len(self.boxes) > 0) if self.boxes is not None else 0


@dataclass
class TilePrediction:
    boxes: object = None  # checked boxes table (detection)
    mask: np.ndarray | None = None
    probability: float | None = None


def load_reference(spec: TaskSpec, reference_path: Path, image_path: Path | None = None):
    """The case's reference: a SimpleITK image (volumes) or a :class:`TileReference` (tile tasks)."""
    if not spec.is_tile_task:
        return sitk.ReadImage(str(reference_path))
    import json

    from arena.datasets.slides import image_size, read_level
    from arena.metrics.detection import read_detections

    reference_path = Path(reference_path)
    if spec.kind == "detection":
        boxes = read_detections(reference_path, image="case")
        size = json.loads(reference_path.read_text()).get("image_size")
        if not size:
            img = image_path or next(reference_path.parent.glob("image.*"))
            size = image_size(img)
        return TileReference(int(size[0]), int(size[1]), boxes=boxes)
    mask = read_level(reference_path, 0) if reference_path.suffix.lower() in (".tif", ".tiff") else \
        sitk.GetArrayFromImage(sitk.ReadImage(str(reference_path)))
    mask = np.asarray(mask).reshape(mask.shape[-2:])
    return TileReference(int(mask.shape[1]), int(mask.shape[0]), mask=mask)


def empty_prediction(spec: TaskSpec, reference):
    """What a failed case is scored as: an all-background volume, or no tile output at all (None)."""
    if isinstance(reference, TileReference):
        return None
    return np.zeros(reference.GetSize()[::-1], dtype=np.uint8)


def score_tile_case(spec: TaskSpec, prediction: TilePrediction | None, reference: TileReference
                    ) -> dict[int, dict[str, float | None]]:
    """Per-case rows (label 1) for a tile task; ``prediction`` None = the case failed.

    Detection: ``targets`` (GT boxes), ``tp``, ``fp``, ``negative`` (1 when the tile has no target) and
    one row per box, ``tp#k`` / ``fp#k`` (k from 0, descending probability) holding its probability:
    exactly what recall at precision, the normal-region FPs and the FROC need over the phase.
    Segmentation + value: ``dice`` (the task's empty policy when both masks are empty; 0 for a failed
    case), ``probability`` (a failed case or a missing value output: ``1 - target``, the maximally
    wrong answer) and ``target``.
    """
    lab = next(iter(spec.labels))
    rows: dict[str, float | None] = {}
    if spec.kind == "detection":
        from arena.metrics.detection import match_detections

        n = len(reference.boxes)
        rows.update(targets=float(n), negative=float(n == 0))
        boxes = prediction.boxes if prediction is not None else None
        if boxes is None or len(boxes) == 0:
            rows.update(tp=0.0, fp=0.0)
            return {lab: rows}
        d = spec.detection
        m = match_detections(boxes, reference.boxes, criterion=d.criterion, threshold=d.threshold,
                             matching=d.matching, images=["case"])
        prob = m.pred_probability
        order = np.argsort(-prob, kind="stable")
        tp = [float(prob[i]) for i in order if m.pred_status[i] == 1]
        fp = [float(prob[i]) for i in order if m.pred_status[i] == 0]
        rows.update(tp=float(len(tp)), fp=float(len(fp)))
        rows.update({f"tp#{k}": v for k, v in enumerate(tp)})
        rows.update({f"fp#{k}": v for k, v in enumerate(fp)})
        return {lab: rows}
    target = reference.target
    ref = reference.mask == lab
    if not ref.any() and spec.empty_policy.reference_empty == "exclude":
        rows["dice"] = None  # not scored where the reference has no lesion, whatever was predicted
    elif prediction is None or prediction.mask is None:
        rows["dice"] = 0.0
    else:
        pred = prediction.mask == lab
        denom = int(ref.sum()) + int(pred.sum())
        if denom == 0:
            rows["dice"] = 1.0 if spec.empty_policy.both_empty == "perfect" else None
        else:
            rows["dice"] = 2.0 * int(np.logical_and(ref, pred).sum()) / denom
    if spec.output_of_kind("value") is not None:
        p = prediction.probability if prediction is not None else None
        rows["probability"] = float(1 - target) if p is None else float(p)
        rows["target"] = float(target)
    return {lab: rows}


def score_case(spec: TaskSpec, prediction, reference) -> dict[int, dict[str, float | None]]:
    """Score a prediction array (z, y, x) against the reference image with each metric's own options
    (tile tasks: :func:`score_tile_case`).

    Metrics that share (convention, percentile, tolerance) are computed in one pass.
    """
    if isinstance(reference, TileReference):
        return score_tile_case(spec, prediction, reference)
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
              limits: SandboxLimits, labels: dict[str, str], keep: Callable[[str], bool] | None = None):
    """Run the container once over ``input_dir``; collect the declared outputs (``keep``) of /output into
    ``results_dir``, counting and discarding the rest (a line in the case log says how much).

    Returns the RunResult with its error/failure refined: a full /output or a SIGXFSZ exit is
    "output too large"; an over-cap /output found while collecting likewise.
    """
    with output_area(out_dir, output_mb) as out:
        run = run_sandboxed(client, image, mounts={"/input": (str(input_dir), "ro"), "/output": (str(out), "rw")},
                            limits=limits, labels=labels)
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


def _check_tile_output(spec: TaskSpec, case_results: Path, reference: TileReference, outcome: CaseOutcome,
                       skipped: list[str] = ()) -> TilePrediction | None:
    """The checked outputs of one tile case, or None with outcome.error set (the first problem)."""
    try:
        pred = TilePrediction()
        if spec.kind == "detection":
            path = find_file_output(case_results, spec.output_of_kind("bounding-boxes"), skipped)
            outcome.output_path = str(path)
            pred.boxes = read_checked_boxes(path, reference.width, reference.height,
                                            max_boxes=spec.detection.max_detections,
                                            max_mb=spec.detection.max_json_mb, image="case")
        else:
            path = find_tile_mask_output(case_results, spec.segmentation_output, skipped)
            outcome.output_path = str(path)
            pred.mask = read_checked_tile_mask(path, reference.width, reference.height, set(spec.labels),
                                               spec.segmentation_output.formats)
            value = spec.output_of_kind("value")
            if value is not None:
                pred.probability = read_checked_value(find_file_output(case_results, value, skipped))
        outcome.ok = True
        return pred
    except OutputError as e:
        outcome.error, outcome.failure = str(e), e.failure
        return None


def _check_case_output(spec: TaskSpec, case_results: Path, reference, outcome: CaseOutcome,
                       skipped: list[str] = ()):
    """The checked prediction array of one case, or an all-background array with outcome.error set."""
    if isinstance(reference, TileReference):
        return _check_tile_output(spec, case_results, reference, outcome, skipped)
    try:
        path = find_segmentation_output(case_results, spec, skipped)
        outcome.output_path = str(path)
        socket = spec.segmentation_output
        warnings: list[str] = []
        prediction = read_checked_output(path, reference, set(spec.labels), socket.formats, socket.geometry,
                                         warnings)
        outcome.log_tail += "".join(f"\n[arena] warning: {w}" for w in warnings)
        outcome.ok = True
        return prediction
    except OutputError as e:
        outcome.error, outcome.failure = str(e), e.failure
        return np.zeros(reference.GetSize()[::-1], dtype=np.uint8)


def evaluate_case(client, spec: TaskSpec, image: str, case_key: str, case_image: Path, case_reference: Path,
                  work_dir: Path, results_dir: Path, limits: SandboxLimits, labels: dict[str, str],
                  run_root: Path | None = None) -> CaseOutcome:
    """Run ``image`` on one case (per-case mode) and score what it wrote.

    A case that fails (container error, no or malformed output) is scored as an empty prediction,
    so every organ present in the reference counts as missed under the task's empty policy; the
    outcome says why it failed (``error`` in words, ``failure`` as a class). The declared outputs are
    kept under ``results_dir`` for inspection. The container's /input and /output live in a random
    folder below ``run_root`` (default :func:`arena.config.default_run_root`); ``work_dir`` only marks it.
    """
    reference = load_reference(spec, case_reference, case_image)
    outcome = CaseOutcome(ok=False)
    with run_area(work_dir, run_root or default_run_root()) as run_dir:
        prepare_case_input(spec, case_image, run_dir / "input")
        run = _run_once(client, image, run_dir / "input", run_dir / "output", results_dir,
                        spec.resources.output_mb, limits, labels, keep=lambda rel: declared_output(spec, rel))
    outcome.exit_code, outcome.runtime_s, outcome.log_tail = run.exit_code, run.runtime_s, run.logs
    outcome.stats = dict(run.stats)
    if run.error:
        outcome.error, outcome.failure = run.error, run.failure
        prediction = empty_prediction(spec, reference)
    else:
        prediction = _check_case_output(spec, results_dir, reference, outcome, run.skipped)
    outcome.scores = score_case(spec, prediction, reference)
    return outcome


def evaluate_batch(client, spec: TaskSpec, image: str, cases: list[CaseInput], work_dir: Path, results_dir: Path,
                   limits: SandboxLimits, labels: dict[str, str], run_root: Path | None = None) -> list[CaseOutcome]:
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
                        spec.resources.output_mb * max(1, len(cases)), limits, labels, keep=keep)
    for case_id, key in keys.items():  # results under the case keys, as in per-case mode
        if (results_dir / case_id).is_dir():
            shutil.rmtree(results_dir / key, ignore_errors=True)
            (results_dir / case_id).rename(results_dir / key)
    run.skipped = [keys[s.split("/", 1)[0]] + s[len(s.split("/", 1)[0]):] if s.split("/", 1)[0] in keys else s
                   for s in run.skipped]
    n = max(1, len(cases))
    share = {k: (v / n if k == "cpu_s" and v is not None else v)
             for k, v in run.stats.items()}
    outcomes = []
    for c in cases:
        reference = load_reference(spec, c.reference, c.image)
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
    reference = load_reference(spec, reference_path)
    outcome = CaseOutcome(ok=False, error=reason, failure=failure)
    outcome.scores = score_case(spec, empty_prediction(spec, reference), reference)
    return outcome

"""Pathology tiles: detection of cells as boxes (DigestPath 2019 task 1) and lesion segmentation with an
image-level probability (DigestPath 2019 task 2).

The input is a TIFF tile; the reference a ground-truth box JSON (detection) or a 2-D lesion mask
(segmentation). Per case Arena stores what the set-level metrics need, as rows of label 1:

- detection: ``targets`` (GT boxes), ``tp``, ``fp``, ``negative`` (1 when the tile has no target) and one
  row per box, ``tp#k`` / ``fp#k`` (k from 0, descending probability) holding its probability: exactly what
  recall at precision, the normal-region FPs and the FROC need over the phase;
- segmentation: ``dice`` (the empty-mask policy when both masks are empty; 0 for a failed case) and, with a
  ``value`` output, ``probability`` (a failed case or a missing value: ``1 - target``, the maximally wrong
  answer) and ``target``.

pandas, tifffile and the metrics are imported where they are used (see ``arena/kinds/base.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arena.kinds.base import DemoCase, Scores, TaskKind, cases_with_known_truth

if TYPE_CHECKING:
    import pandas as pd

    from arena.tasks.spec import TaskSpec

DETECTION_METRICS = frozenset({"recall", "fp_score", "froc"})


@dataclass
class TileReference:
    """A tile task's ground truth: boxes (detection) or a lesion mask (segmentation), and the tile size."""

    width: int
    height: int
    boxes: Any = None  # pandas DataFrame image, x0, y0, x1, y1 (detection)
    mask: np.ndarray | None = None  # (H, W) uint8 (segmentation)

    @property
    def target(self) -> int:
        """Image-level truth: 1 when the tile holds a target (cells, lesion)."""
        if self.mask is not None:
            return int(bool(self.mask.any()))
        return int(len(self.boxes) > 0) if self.boxes is not None else 0


@dataclass
class TilePrediction:
    boxes: Any = None  # checked boxes table (detection)
    mask: np.ndarray | None = None
    probability: float | None = None


class TileDetection(TaskKind):
    name: ClassVar[str] = "tile-detection"
    title: ClassVar[str] = "tile detection"
    volumetric: ClassVar[bool] = False
    metrics: ClassVar[frozenset[str]] = DETECTION_METRICS
    ranking_methods: ClassVar[frozenset[str]] = frozenset({"digestpath-2019"})
    set_ranking_methods: ClassVar[frozenset[str]] = frozenset({"digestpath-2019"})

    @classmethod
    def matches(cls, spec: TaskSpec) -> bool:
        return spec.kind == "detection"

    def check_spec(self, spec: TaskSpec) -> list[str]:
        problems = super().check_spec(spec)
        if spec.output_of_kind("bounding-boxes") is None:
            problems.insert(0, "outputs: a detection task needs an output of kind 'bounding-boxes'")
        return problems

    def load_reference(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> TileReference:
        from arena.datasets.slides import image_size
        from arena.metrics.detection import read_detections

        reference_path = Path(reference_path)
        boxes = read_detections(reference_path, image="case")
        size = json.loads(reference_path.read_text()).get("image_size")
        if not size:
            size = image_size(image_path or next(reference_path.parent.glob("image.*")))
        return TileReference(int(size[0]), int(size[1]), boxes=boxes)

    def case_meta(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> dict[str, Any]:
        """The tile's truth for the board before any entry scored it: ``targets`` (reference boxes; detection
        only) and ``positive`` (the tile holds a target)."""
        ref = self.load_reference(spec, reference_path, image_path)
        info: dict[str, Any] = {"positive": bool(ref.target)}
        if ref.boxes is not None:
            info["targets"] = int(len(ref.boxes))
        return info

    def find_output(self, spec: TaskSpec, results: Path, skipped: Sequence[str]) -> Path:
        from arena.runner.contract import find_file_output

        return find_file_output(results, spec.output_of_kind("bounding-boxes"), skipped)

    def read_output(self, spec: TaskSpec, path: Path, results: Path, reference: TileReference,
                    skipped: Sequence[str], warnings: list[str]) -> TilePrediction:
        from arena.runner.output_check import read_checked_boxes

        boxes = read_checked_boxes(path, reference.width, reference.height, max_boxes=spec.detection.max_detections,
                                   max_mb=spec.detection.max_json_mb, image="case")
        return TilePrediction(boxes=boxes)

    def empty_prediction(self, spec: TaskSpec, reference: TileReference) -> None:
        return None  # no boxes at all

    def score_case(self, spec: TaskSpec, prediction: TilePrediction | None, reference: TileReference) -> Scores:
        from arena.metrics.detection import match_detections

        lab = next(iter(spec.labels))
        n = len(reference.boxes)
        rows: dict[str, float | None] = {"targets": float(n), "negative": float(n == 0)}
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

    def entry_metrics(self, scores: pd.DataFrame, spec: TaskSpec, metrics: Sequence[str], entries: Sequence[Any],
                      cases: Sequence[Any], case_info: Mapping[Any, Mapping[str, Any]]) -> pd.DataFrame:
        """DigestPath's recall, FP score and FROC per entry, from the boxes of all the phase's tiles pooled.
        A tile whose number of targets is unknown (no ``case_info``, no entry's row yet) is left out for
        every entry alike (:func:`arena.kinds.base.cases_with_known_truth`)."""
        import pandas as pd

        from arena.metrics.detection import digestpath_numbers

        summary = scores[scores["metric"] == "targets"]
        targets = {c: float(case_info.get(c, {}).get("targets", np.nan)) for c in cases}
        stored = summary.groupby("case")["value"].max().to_dict()
        for c in cases:
            if np.isnan(targets[c]) and c in stored:
                targets[c] = stored[c]
        cases = cases_with_known_truth(cases, targets)
        negative = {c for c in cases if targets[c] == 0}
        n_targets, n_negative = int(sum(targets[c] for c in cases)), len(negative)
        m = scores["metric"].astype(str)
        det = scores.assign(kind=m.str[:3])[m.str[:3].isin(["tp#", "fp#"])]
        d = spec.detection
        out = []
        for e in entries:
            de = det[det["entry"] == e]
            tp = de.loc[de["kind"] == "tp#", "value"].to_numpy(float)
            fpd = de[de["kind"] == "fp#"]
            fp = fpd["value"].to_numpy(float)
            fp_normal = fpd.loc[fpd["case"].isin(negative), "value"].to_numpy(float)
            row = digestpath_numbers(tp, fp, fp_normal, n_targets, n_negative, min_precision=d.min_precision,
                                    normal_fp_rates=d.normal_fp_rates, fp_score_max=d.fp_score_max)
            row.update(entry=e, cases=float(scores.loc[(scores["entry"] == e) & (scores["metric"] == "targets"),
                                                       "case"].nunique()))
            out.append(row)
        return pd.DataFrame(out)

    def demo_strata(self, spec: TaskSpec, n: int) -> list[object]:
        from arena.datasets.pathology import signet_split

        return list(signet_split(n))

    def write_demo_case(self, spec: TaskSpec, root: Path, key: str, index: int, size: str,
                        stratum: object = None) -> DemoCase:
        from arena.datasets.pathology import write_signet_case

        meta = write_signet_case(root, key, seed=5000 + index, size=size, positive=bool(stratum))
        return DemoCase(root / key / "image.tif", root / key / "reference.json",
                        {"synthetic": True, **{k: v for k, v in meta.items() if k != "case_id"}}, bool(stratum))


class TileSegmentation(TaskKind):
    name: ClassVar[str] = "tile-segmentation"
    title: ClassVar[str] = "tile segmentation"
    volumetric: ClassVar[bool] = False
    metrics: ClassVar[frozenset[str]] = frozenset({"dice", "auc"})
    ranking_methods: ClassVar[frozenset[str]] = frozenset({"aggregate-then-rank", "rank-then-aggregate",
                                                           "mean-of-metric-ranks"})

    @classmethod
    def matches(cls, spec: TaskSpec) -> bool:
        return spec.kind == "segmentation" and spec.modality == "pathology"

    def check_spec(self, spec: TaskSpec) -> list[str]:
        problems = super().check_spec(spec)
        if spec.output_of_kind("segmentation") is None:
            problems.insert(0, "outputs: a segmentation task needs an output of kind 'segmentation'")
        return problems

    def load_reference(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> TileReference:
        reference_path = Path(reference_path)
        if reference_path.suffix.lower() in (".tif", ".tiff"):
            from arena.datasets.slides import read_level

            mask = read_level(reference_path, 0)
        else:
            import SimpleITK as sitk

            mask = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_path)))
        mask = np.asarray(mask).reshape(mask.shape[-2:])
        return TileReference(int(mask.shape[1]), int(mask.shape[0]), mask=mask)

    case_meta = TileDetection.case_meta  # ``positive`` from the lesion mask

    def find_output(self, spec: TaskSpec, results: Path, skipped: Sequence[str]) -> Path:
        from arena.runner.contract import find_tile_mask_output

        return find_tile_mask_output(results, spec.segmentation_output, skipped)

    def read_output(self, spec: TaskSpec, path: Path, results: Path, reference: TileReference,
                    skipped: Sequence[str], warnings: list[str]) -> TilePrediction:
        from arena.runner.contract import find_file_output
        from arena.runner.output_check import read_checked_tile_mask, read_checked_value

        pred = TilePrediction(mask=read_checked_tile_mask(path, reference.width, reference.height, set(spec.labels),
                                                          spec.segmentation_output.formats))
        value = spec.output_of_kind("value")
        if value is not None:
            pred.probability = read_checked_value(find_file_output(results, value, skipped))
        return pred

    def empty_prediction(self, spec: TaskSpec, reference: TileReference) -> None:
        return None  # no mask, no probability

    def score_case(self, spec: TaskSpec, prediction: TilePrediction | None, reference: TileReference) -> Scores:
        lab = next(iter(spec.labels))
        rows: dict[str, float | None] = {}
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
            rows["probability"] = float(1 - reference.target) if p is None else float(p)
            rows["target"] = float(reference.target)
        return {lab: rows}

    def demo_strata(self, spec: TaskSpec, n: int) -> list[object]:
        from arena.datasets.pathology import colon_split

        return list(colon_split(n))

    def write_demo_case(self, spec: TaskSpec, root: Path, key: str, index: int, size: str,
                        stratum: object = None) -> DemoCase:
        from arena.datasets.pathology import write_colon_case

        meta = write_colon_case(root, key, seed=7000 + index, size=size, malignant=bool(stratum))
        return DemoCase(root / key / "image.tif", root / key / "reference.tif",
                        {"synthetic": True, **{k: v for k, v in meta.items() if k != "case_id"}}, bool(stratum))


__all__ = ["DETECTION_METRICS", "TileDetection", "TilePrediction", "TileReference",
           "TileSegmentation"]

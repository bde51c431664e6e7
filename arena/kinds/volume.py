"""Volume segmentation (CT, MR): a label map in, a label map of the same voxel grid out, scored per organ.

The reference is a label image; the output one label image of the same geometry (read by the jailed
reader, ``arena.runner.output_check``); scores are per label with each metric's own options
(:func:`arena.metrics.score_segmentation`); a failed case is an all-background volume, so every organ
present in the reference counts as missed under the task's empty-mask policy.

SimpleITK, scipy (the metrics) and the phantom generators are imported where they are used: the task
spec asks its kind to check it, and loading a spec must not cost their 0.7 s of start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from arena.kinds.base import DemoCase, Scores, TaskKind

if TYPE_CHECKING:
    import SimpleITK as sitk

    from arena.metrics.segmentation import EmptyPolicy
    from arena.tasks.spec import TaskSpec


def _module(name: str):
    import importlib

    return importlib.import_module(name)


#: synthetic case generators by name (task.yaml ``data.generator``): name -> (module, writer, label map):
#: ``writer(directory, key, seed=, size=) -> meta`` writes ``directory/key/image.mha`` and ``reference.mha``
_GENERATORS: dict[str, tuple[str, str, str]] = {
    "han-oar-22": ("arena.datasets.phantom", "write_case", "HAN_OAR_22"),
    "han-oar-9": ("arena.datasets.phantom", "write_case_9", "HAN_OAR_9"),
    "thorax": ("arena.datasets.thorax", "write_thorax_case", "THORACIC_OAR_6"),
}
GENERATOR_NAMES = sorted(_GENERATORS)


def generator(name: str) -> tuple[Callable[..., dict], dict[int, str]]:
    """The writer and label map of generator ``name`` (KeyError for an unknown name)."""
    module, writer, labels = _GENERATORS[name]
    mod = _module(module)
    return getattr(mod, writer), getattr(mod, labels)

SEGMENTATION_METRICS = frozenset({"dice", "jaccard", "volume_ref", "volume_pred", "volume_diff", "hd", "hd95",
                                  "assd", "masd", "asd_pred_to_ref", "asd_ref_to_pred", "nsd"})


def generator_for(spec: TaskSpec) -> str:
    """The generator a task's demo data comes from: ``data.generator``, else the one whose label map it
    uses. ValueError (naming the choices) when there is none."""
    if spec.data is not None and spec.data.generator:
        if spec.data.generator not in _GENERATORS:
            raise ValueError(f"task {spec.slug}: data.generator {spec.data.generator!r} unknown; "
                             f"expected one of {GENERATOR_NAMES}")
        return spec.data.generator
    names = {lab: s.name for lab, s in spec.labels.items()}
    for name in GENERATOR_NAMES:
        if generator(name)[1] == names:
            return name
    raise ValueError(f"task {spec.slug} has no synthetic data generator (set data.generator in task.yaml to one "
                     f"of {GENERATOR_NAMES}, or load real cases with a data.loader)")


def empty_policy_for(spec: TaskSpec) -> EmptyPolicy:
    """The task's empty-mask policy as the metrics take it."""
    from arena.metrics.segmentation import EmptyPolicy

    return EmptyPolicy(both_empty=spec.empty_policy.both_empty,
                       one_empty_distance=spec.empty_policy.one_empty_distance,
                       reference_empty=spec.empty_policy.reference_empty)


class VolumeSegmentation(TaskKind):
    name: ClassVar[str] = "volume-segmentation"
    title: ClassVar[str] = "volume segmentation"
    volumetric: ClassVar[bool] = True
    metrics: ClassVar[frozenset[str]] = SEGMENTATION_METRICS
    ranking_methods: ClassVar[frozenset[str]] = frozenset({"aggregate-then-rank", "rank-then-aggregate",
                                                           "mean-of-metric-ranks"})

    @classmethod
    def matches(cls, spec: TaskSpec) -> bool:
        return spec.kind == "segmentation" and spec.modality != "pathology"

    def check_spec(self, spec: TaskSpec) -> list[str]:
        problems = super().check_spec(spec)
        if spec.output_of_kind("segmentation") is None:
            problems.insert(0, "outputs: a segmentation task needs an output of kind 'segmentation'")
        return problems

    def load_reference(self, spec: TaskSpec, reference_path: Path, image_path: Path | None = None) -> sitk.Image:
        import SimpleITK as sitk

        return sitk.ReadImage(str(reference_path))

    def find_output(self, spec: TaskSpec, results: Path, skipped: Sequence[str]) -> Path:
        from arena.runner.contract import find_segmentation_output

        return find_segmentation_output(results, spec, skipped)

    def read_output(self, spec: TaskSpec, path: Path, results: Path, reference: sitk.Image, skipped: Sequence[str],
                    warnings: list[str]) -> np.ndarray:
        from arena.runner.output_check import read_checked_output

        socket = spec.segmentation_output
        return read_checked_output(path, reference, set(spec.labels), socket.formats, socket.geometry, warnings)

    def empty_prediction(self, spec: TaskSpec, reference: sitk.Image) -> np.ndarray:
        return np.zeros(reference.GetSize()[::-1], dtype=np.uint8)

    def score_case(self, spec: TaskSpec, prediction: Any, reference: sitk.Image) -> Scores:
        """Metrics that share (convention, percentile, tolerance) are computed in one pass."""
        import SimpleITK as sitk

        from arena.metrics.segmentation import score_segmentation

        groups: dict[tuple[str, float, float], list[str]] = {}
        for m in spec.metrics:
            groups.setdefault((m.convention, m.percentile, m.tolerance_mm), []).append(m.name)
        ref = sitk.GetArrayViewFromImage(reference)
        out: Scores = {lab: {} for lab in spec.labels}
        for (convention, percentile, tolerance), names in groups.items():
            scores = score_segmentation(prediction, ref, reference.GetSpacing()[::-1], list(spec.labels),
                                        convention=convention, percentile=percentile, tolerance_mm=tolerance,
                                        empty_policy=empty_policy_for(spec))
            for lab, vals in scores.items():
                out[lab].update({k: vals[k] for k in names})
        return out

    def write_demo_case(self, spec: TaskSpec, root: Path, key: str, index: int, size: str,
                        stratum: object = None) -> DemoCase:
        name = generator_for(spec)
        write, labels = generator(name)
        names = {lab: s.name for lab, s in spec.labels.items()}
        if labels != names:
            raise ValueError(f"task {spec.slug}: generator {name!r} writes labels {labels}, the task declares {names}")
        meta = write(root, key, seed=1000 + index, size=size)
        keep = {k: v for k, v in meta.items() if k not in ("case_id", "image", "reference")}
        return DemoCase(root / key / "image.mha", root / key / "reference.mha",
                        {"synthetic": True, "generator": name, **keep})

"""One case in the viewer: its CT, reference and model outputs through the cache, its slices and targets.

The routes (:mod:`arena.web.viewer`) decide who may see what and pass plain paths and ids here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from arena.viewer import jump, render, volumes
from arena.viewer.volumes import Volume

JUMP_VERSION = 1  # bump when jump.json's content changes meaning: old files are recomputed


@dataclass(frozen=True)
class CaseFiles:
    case_id: int
    image: Path
    reference: Path


@dataclass(frozen=True)
class ModelOutput:
    """One model's output for the case: the evaluation that made it and the label map file."""

    evaluation_id: int
    prediction: Path


@dataclass(frozen=True)
class ViewerCache:
    """The cache at ``root`` (``ARENA_HOME/viewer-cache``), pruned against ``results_root`` within
    ``max_bytes`` (the server's ARENA_VIEWER_CACHE_GB) whenever a new entry is written."""

    root: Path
    results_root: Path
    max_bytes: int

    def _load(self, folder: Path, name: str, source: Path, kind: volumes.Kind) -> Volume:
        return volumes.cached_volume(folder, name, source, kind, on_new=self.prune)

    def prune(self) -> list[Path]:
        """Keep the cache within its budget (:func:`arena.viewer.volumes.prune`); called after each new file."""
        return volumes.prune(self.root, self.results_root, self.max_bytes)

    def ct(self, case: CaseFiles) -> Volume:
        return self._load(volumes.case_folder(self.root, case.case_id), "ct", case.image, "image")

    def reference(self, case: CaseFiles) -> Volume:
        ref = self._load(volumes.case_folder(self.root, case.case_id), "reference", case.reference, "labels")
        volumes.check_same_grid(self.ct(case), ref, f"{case.reference}")
        return ref

    def prediction(self, case: CaseFiles, model: ModelOutput) -> Volume:
        folder = volumes.evaluation_folder(self.root, model.evaluation_id, case.case_id)
        pred = self._load(folder, "prediction", model.prediction, "labels")
        volumes.check_same_grid(self.ct(case), pred, f"{model.prediction}")
        return pred

    def slice_png(self, case: CaseFiles, models: Sequence[ModelOutput], view: str, index: int,
                  window: str = "soft-tissue", organs: Iterable[int] | None = None,
                  show_reference: bool = True) -> bytes:
        """The PNG of one slice: the reference solid, ``models[0]`` dashed, ``models[1]`` dotted."""
        if len(models) > 2:
            raise ValueError(f"models: at most two models are shown at once, got {len(models)}")
        ct = self.ct(case)
        overlays = [render.Overlay(self.reference(case).array, "solid")] if show_reference else []
        overlays += [render.Overlay(self.prediction(case, m).array, style)
                     for m, style in zip(models, ("dashed", "dotted"))]
        img = render.render_slice(ct.array, ct.spacing, view, index, window, overlays, organs)
        return render.png_bytes(img)

    def geometry(self, case: CaseFiles) -> dict[str, Any]:
        """Shape, spacing and each view's slice count and display size (JSON-ready)."""
        ct = self.ct(case)
        shape = ct.array.shape
        return {"shape": list(shape), "spacing_mm": list(ct.spacing),
                "views": {v: {"slices": render.slice_count(shape, v),
                              "size": list(render.display_size(shape, ct.spacing, v))} for v in render.VIEWS}}

    def targets(self, case: CaseFiles, model: ModelOutput, labels: Sequence[int], convention: str = "medpy",
                percentile: float = 95.0) -> dict[str, Any]:
        """The jump-to targets of ``model`` on this case (:func:`arena.viewer.jump.jump_targets`), kept in
        the evaluation's cache entry and recomputed when the output, reference or options changed."""
        folder = volumes.evaluation_folder(self.root, model.evaluation_id, case.case_id)
        key = {"version": JUMP_VERSION, "prediction": volumes.file_stamp(Path(model.prediction)),
               "reference": volumes.file_stamp(Path(case.reference)), "labels": sorted(int(x) for x in labels),
               "convention": convention, "percentile": percentile}
        cached = volumes.read_json(folder / "jump.json")
        if cached and cached.get("key") == key:
            return cached["targets"]  # the stamps in the key stand for the files: no volume is opened
        pred, ref = self.prediction(case, model), self.reference(case)
        targets = jump.jump_targets(pred.array, ref.array, ref.spacing, labels, convention, percentile)
        volumes.write_json(folder / "jump.json", {"key": key, "targets": targets})
        return targets

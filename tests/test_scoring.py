"""The runner scores with each metric's own convention, percentile and tolerance from task.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from arena.metrics import score_segmentation
from arena.runner.evaluate import score_case
from arena.tasks.spec import parse_spec

HAN = Path(__file__).resolve().parents[1] / "tasks" / "han-oar-22" / "task.yaml"


def test_score_case_uses_each_metrics_options():
    data = yaml.safe_load(HAN.read_text())
    data["metrics"] = [{"name": "dice"}, {"name": "hd95", "convention": "deepmind", "percentile": 90},
                       {"name": "nsd", "convention": "medpy", "tolerance_mm": 2.0}, {"name": "jaccard"}]
    spec = parse_spec(data)
    from arena.datasets.phantom import generate_case

    _, ref_img = generate_case(3, "small")
    ref = sitk.GetArrayFromImage(ref_img)
    pred = np.roll(ref, 1, axis=1)
    got = score_case(spec, pred, ref_img)
    spacing = ref_img.GetSpacing()[::-1]
    dm = score_segmentation(pred, ref, spacing, list(spec.labels), "deepmind", percentile=90)
    mp = score_segmentation(pred, ref, spacing, list(spec.labels), "medpy", tolerance_mm=2.0)
    for lab in spec.labels:
        assert set(got[lab]) == {"dice", "hd95", "nsd", "jaccard"}
        assert got[lab]["hd95"] == dm[lab]["hd95"] and got[lab]["nsd"] == mp[lab]["nsd"]
        assert got[lab]["dice"] == mp[lab]["dice"] and got[lab]["jaccard"] == mp[lab]["jaccard"]

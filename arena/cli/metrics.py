"""``arena metrics seg|det``: score files directly, without a task or a server.

Start-up time matters here (``arena metrics seg`` on a CT case is meant to take about a second end to end):
the metric modules are imported inside the commands, not at the top.
"""

from __future__ import annotations

from pathlib import Path

import click

from arena.cli.root import _fail, main


@main.group()
def metrics() -> None:
    """Score files directly, without a task or a server."""


@metrics.command("seg")
@click.argument("prediction", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--labels", help="label ids, e.g. 1,2,5-7 (default: every label in either file)")
@click.option("--convention", type=click.Choice(["medpy", "max-directed", "mean-directed", "deepmind"]),
              default="medpy", show_default=True, help="surface-distance convention for HD95/ASSD/NSD")
@click.option("--percentile", type=float, default=95.0, show_default=True)
@click.option("--tolerance", type=float, default=1.0, show_default=True, help="NSD tolerance (mm)")
@click.option("--json", "as_json", is_flag=True, help="print {label: {metric: value}} as JSON")
def metrics_seg(prediction: Path, reference: Path, labels: str | None, convention: str, percentile: float,
                tolerance: float, as_json: bool) -> None:
    """Score a PREDICTION label map against a REFERENCE (any SimpleITK format; same grid required)."""
    import json
    import math

    from arena.metrics.files import parse_labels, score_files

    try:
        scores = score_files(prediction, reference, parse_labels(labels), convention, percentile, tolerance)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        clean = {str(lab): {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                            for k, v in vals.items()} for lab, vals in scores.items()}
        click.echo(json.dumps(clean, indent=2))
        return
    cols = ["dice", "jaccard", "hd95", "hd", "assd", "nsd", "volume_ref", "volume_pred"]
    units = {"hd95": "mm", "hd": "mm", "assd": "mm", "volume_ref": "mm³", "volume_pred": "mm³"}
    click.echo(f"convention {convention}, HD{percentile:g}, NSD at {tolerance:g} mm")
    click.echo(f"{'label':>6} " + " ".join(f"{c + (' ' + units[c] if c in units else ''):>15}" for c in cols))
    for lab, vals in scores.items():
        cells = ["–" if vals[c] is None else f"{vals[c]:.4f}" if c in ("dice", "jaccard", "nsd") else f"{vals[c]:.2f}"
                 for c in cols]
        click.echo(f"{lab:>6} " + " ".join(f"{x:>15}" for x in cells))


@metrics.command("det")
@click.argument("ground_truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--criterion", type=click.Choice(["distance", "inside-radius", "iou", "centre-in-box"]),
              default="distance", show_default=True, help="what makes a prediction hit a finding")
@click.option("--threshold", type=float, help="distance (mm/px) or IoU for the criterion")
@click.option("--matching", type=click.Choice(["greedy", "luna16"]), default="greedy", show_default=True,
              help="greedy one-to-one by probability, or the LUNA16 script's rule")
@click.option("--score-threshold", type=float, default=0.5, show_default=True,
              help="probability cut-off for precision / recall / F1")
@click.option("--json", "as_json", is_flag=True, help="print every number as JSON")
def metrics_det(ground_truth: Path, predictions: Path, criterion: str, threshold: float | None, matching: str,
                score_threshold: float, as_json: bool) -> None:
    """Score detections (grand-challenge JSON or LUNA16-style CSV) against GROUND_TRUTH."""
    import json

    from arena.metrics.detection import read_detections, score_detection

    try:
        gt = read_detections(ground_truth, default_diameter_mm=10.0)
        pred = read_detections(predictions)
        images = sorted(set(gt["image"]) | set(pred["image"]), key=str)
        res = score_detection(pred, gt, criterion=criterion, threshold=threshold, matching=matching,
                              images=images, score_threshold=score_threshold)
    except ValueError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(res, indent=2, default=str))
        return
    froc = res["froc"]
    click.echo(f"{res['counts']}")
    click.echo("FROC sensitivity at FPs/image: " + ", ".join(
        f"{r:g}: {s:.3f}" for r, s in zip(froc["fp_rates"], froc["sensitivity_interpolated"])))
    click.echo(f"CPM interpolated {froc['cpm_interpolated']:.4f}, nearest {froc['cpm_nearest']:.4f}")
    click.echo(f"AP ({'all-point'}) {res['ap']:.4f}; at p ≥ {score_threshold:g}: " + ", ".join(
        f"{k} {v:.3f}" for k, v in res["at_threshold"].items() if isinstance(v, float)))

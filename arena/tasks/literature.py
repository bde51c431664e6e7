"""Published results of a task (``tasks/<slug>/literature.csv``): reading and checking the file.

Placing them on a board (never ranked) is :func:`arena.leaderboard.ranking.place_literature`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from arena.metrics.directions import DISTANCE_METRICS, OVERLAP_METRICS
from arena.metrics.segmentation import CONVENTIONS

if TYPE_CHECKING:
    from arena.tasks.spec import TaskSpec

LITERATURE_COLUMNS = ["source", "citation", "table", "dataset", "model", "label", "metric", "value", "sd", "unit",
                      "convention", "flag", "note"]
_REQUIRED_LITERATURE = ("source", "citation", "table", "dataset", "model", "label", "metric", "value", "unit",
                        "convention")
MEAN_LABEL = "mean"
_UNITS = ("%", "fraction", "mm")
#: ``convention`` of a row whose metric has no convention to state (Dice, Jaccard, ...).
NO_CONVENTION = "n/a"
#: ``convention`` of a distance row whose paper does not say how it computed the distance.
UNSTATED_CONVENTION = "not stated"


def distance_conventions() -> tuple[str, ...]:
    """The distance conventions a published row may name: Arena's own (``arena.metrics.segmentation.CONVENTIONS``:
    medpy, max-directed, mean-directed, deepmind) and ``"not stated"``."""
    return (*CONVENTIONS, UNSTATED_CONVENTION)


def _amount(r: dict[str, str], column: str, where: str, expected: str) -> float:
    """Cell ``column`` of row ``r`` as a finite number >= 0 (ValueError naming ``where`` and the column)."""
    try:
        x = float(r[column])
    except ValueError:
        raise ValueError(f"{where}, column {column!r}: expected {expected}, got {r[column]!r}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{where}, column {column!r}: expected a finite number >= 0, got {r[column]!r}")
    return x


def _unit_ok(metric: str, unit: str) -> bool:
    if metric in OVERLAP_METRICS:
        return unit in ("%", "fraction")
    if metric in DISTANCE_METRICS:
        return unit == "mm"
    return unit in _UNITS


def load_literature(path: str | Path, spec: TaskSpec) -> pd.DataFrame:
    """Published results of ``tasks/<slug>/literature.csv`` as a long table.

    File format (UTF-8 CSV; lines starting with ``#`` are comments; a header row naming exactly the
    columns ``source, citation, table, dataset, model, label, metric, value, sd, unit, convention, flag, note``
    in any order):

    - ``source``: short name of the paper (e.g. ``AnatomyNet (Zhu 2019)``); ``citation``: the full reference.
    - ``table``: where in the paper the number is printed (e.g. ``Table 1``, ``Table 6 (ablation)``).
    - ``dataset``: the data set the paper evaluated on, in words (e.g. the authors' in-house test set):
      a board shows it, since a published number is never measured on the task's own cases.
    - ``model``: the method as the paper names it; (source, model) identifies a published entry.
    - ``label``: a label name of task.yaml (or its numeric id), or ``mean`` for a mean the paper reports
      over all of the task's labels.
    - ``metric``: one of the task's metrics (only the metrics the paper reports; nothing is imputed).
    - ``value`` in ``unit``: ``%`` or ``fraction`` for dice/jaccard/nsd (converted to a fraction), ``mm``
      for distances; ``sd``: the paper's standard deviation in the same unit (may be empty).
    - ``convention``: for a distance metric, how the paper computed it: one of :func:`distance_conventions`
      (e.g. FocusNetv2's 95HD is ``mean-directed``); ``n/a`` for the other metrics.
    - ``flag``: empty, or a short warning shown with the number (e.g. a cell that looks like a typo in the
      paper, kept as printed; a value the paper reports once for a merged left+right pair).
    - ``note``: free text.

    Returns columns ``entry`` (``"published:<source>/<model>"``), ``source, citation, table, dataset, model,
    label`` (label id; ``<NA>`` for ``mean``), ``label_name, metric, value`` (arena units), ``reported`` (the
    number as written), ``sd`` (arena units, NaN if none), ``unit, convention, flag, note, badge``
    (``"published"``) and ``evaluated_here`` (False: not evaluated on this test set).

    Raises:
        ValueError: naming the file, the row (data row number and file line) and the column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]
    out_cols = ["entry", "source", "citation", "table", "dataset", "model", "label", "label_name", "metric", "value",
                "reported", "sd", "unit", "convention", "flag", "note", "badge", "evaluated_here"]
    if not lines:
        raise ValueError(f"{path}: no header row (expected columns {', '.join(LITERATURE_COLUMNS)})")
    rows = list(csv.reader(io.StringIO("\n".join(ln for _, ln in lines))))
    header = [h.strip() for h in rows[0]]
    missing = [c for c in LITERATURE_COLUMNS if c not in header]
    unknown = [c for c in header if c not in LITERATURE_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise ValueError(f"{path}: line {lines[0][0]}: header: expected columns {', '.join(LITERATURE_COLUMNS)}; "
                         f"missing {missing}, unknown {unknown}")
    by_name = {s.name: lab for lab, s in spec.labels.items()}
    metric_names = [m.name for m in spec.metrics]
    records = []
    seen: dict[tuple, int] = {}
    citations: dict[tuple, str] = {}
    for n, (row, (lineno, _)) in enumerate(zip(rows[1:], lines[1:]), start=1):
        where = f"{path}: row {n} (line {lineno})"
        if len(row) != len(header):
            raise ValueError(f"{where}: expected {len(header)} fields, got {len(row)} (quote fields containing commas)")
        r = {h: v.strip() for h, v in zip(header, row)}
        for c in _REQUIRED_LITERATURE:
            if not r[c]:
                raise ValueError(f"{where}, column {c!r}: must not be empty")
        lab_txt = r["label"]
        if lab_txt == MEAN_LABEL:
            lab, lab_name = pd.NA, MEAN_LABEL
        elif lab_txt in by_name:
            lab, lab_name = by_name[lab_txt], lab_txt
        elif lab_txt.isdigit() and int(lab_txt) in spec.labels:
            lab, lab_name = int(lab_txt), spec.labels[int(lab_txt)].name
        else:
            raise ValueError(f"{where}, column 'label': unknown label {lab_txt!r}; expected one of "
                             f"{list(by_name)} (or a label id, or {MEAN_LABEL!r})")
        metric = r["metric"]
        if metric not in metric_names:
            raise ValueError(f"{where}, column 'metric': {metric!r} is not a metric of task {spec.slug} "
                             f"(expected one of {metric_names})")
        unit = r["unit"]
        if unit not in _UNITS or not _unit_ok(metric, unit):
            ok = (["%", "fraction"] if metric in OVERLAP_METRICS
                  else ["mm"] if metric in DISTANCE_METRICS else list(_UNITS))
            raise ValueError(f"{where}, column 'unit': expected one of {ok} for {metric}, got {unit!r}")
        reported = _amount(r, "value", where, "a number")
        value = reported / 100.0 if unit == "%" else reported
        if metric in OVERLAP_METRICS and value > 1:
            raise ValueError(f"{where}, column 'value': {metric} must be at most {'100' if unit == '%' else '1'} "
                             f"{unit}, got {r['value']!r}")
        sd = _amount(r, "sd", where, "a number or nothing") if r["sd"] else float("nan")
        sd = sd / 100.0 if unit == "%" else sd
        conv = r["convention"]
        if metric in DISTANCE_METRICS and conv not in distance_conventions():
            raise ValueError(f"{where}, column 'convention': expected one of {list(distance_conventions())} for "
                             f"{metric}, got {conv!r}")
        if metric not in DISTANCE_METRICS and conv != NO_CONVENTION:
            raise ValueError(f"{where}, column 'convention': expected {NO_CONVENTION!r} for {metric} "
                             f"(a convention is stated for distances only), got {conv!r}")
        entry_key = (r["source"], r["model"])
        if citations.setdefault(entry_key, r["citation"]) != r["citation"]:
            raise ValueError(f"{where}, column 'citation': differs from an earlier row of the same source and model")
        k = (*entry_key, lab_name, metric)
        if k in seen:
            raise ValueError(f"{where}: duplicate of row {seen[k]} (same source, model, label and metric)")
        seen[k] = n
        records.append({"entry": f"published:{r['source']}/{r['model']}", "source": r["source"],
                        "citation": r["citation"], "table": r["table"], "dataset": r["dataset"], "model": r["model"],
                        "label": lab, "label_name": lab_name, "metric": metric, "value": value, "reported": reported,
                        "sd": sd, "unit": "fraction" if unit == "%" else unit, "convention": conv, "flag": r["flag"],
                        "note": r["note"], "badge": "published", "evaluated_here": False})
    df = pd.DataFrame(records, columns=out_cols)
    df["label"] = df["label"].astype("Int64")
    df["value"] = df["value"].astype(float)
    df["sd"] = df["sd"].astype(float)
    df["evaluated_here"] = df["evaluated_here"].astype(bool)
    return df

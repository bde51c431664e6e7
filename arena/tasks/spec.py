"""Task specifications: ``tasks/<slug>/task.yaml`` validated into a typed :class:`TaskSpec`.

Every validation error names the file, the key (dotted path, list items by index) and what was
expected, e.g. ``tasks/han-oar-22/task.yaml: phases.1.slug: expected one of ..., got 'tset'``.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from arena.kinds import kind_for
from arena.metrics.directions import SET_METRICS, higher_is_better

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class TaskSpecError(ValueError):
    """A task.yaml that cannot be used; the message names file, key and what was expected."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_path(value: str, root: str) -> str:
    if not value or value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"a relative path below {root} without '..'")
    return value.strip("/")


class InputSocket(_Strict):
    slug: str = Field(pattern=SLUG)
    kind: Literal["image"] = "image"
    relative_path: str = Field(description="Where the image lies below /input, e.g. images/ct")
    formats: list[Literal["mha", "tif", "tiff", "png", "nii.gz"]] = ["mha"]

    _relative = field_validator("relative_path")(lambda v: _relative_path(v, "/input"))


class OutputSocket(_Strict):
    """An output socket. ``segmentation``: one label image in the folder ``/output/<relative_path>/``;
    ``bounding-boxes``: grand-challenge "Multiple 2D bounding boxes" JSON at ``/output/<relative_path>``
    (each box with a ``probability``); ``value``: a JSON number at ``/output/<relative_path>`` (e.g. an
    image-level probability); ``json``: any JSON, not scored."""

    slug: str = Field(pattern=SLUG)
    kind: Literal["segmentation", "json", "bounding-boxes", "value"] = "segmentation"
    relative_path: str
    formats: list[Literal["mha", "nii.gz", "nrrd", "tif", "tiff", "png"]] | None = Field(
        default=None, description="accepted image formats of a segmentation output (None: any volume format)")
    geometry: Literal["strict", "adopt-default"] = Field(
        default="strict", description="a segmentation output's geometry: 'strict' = size, spacing, origin and "
        "direction must equal the input's; 'adopt-default' = an output with the input's size whose header is "
        "exactly ITK's default (spacing 1, origin 0, identity direction: what SimpleITK.GetImageFromArray "
        "writes, as grand-challenge's templates do) takes the input's geometry, with a warning in the case log")

    _relative = field_validator("relative_path")(lambda v: _relative_path(v, "/output"))


class LabelSpec(_Strict):
    name: str = Field(min_length=1, max_length=60)
    weight: float = Field(default=1.0, gt=0, description="importance weight in weighted means")
    small: bool = Field(default=False, description="a small organ (e.g. chiasm, optic nerves): boards may group "
                        "or flag it; its Dice is noisier")


MetricName = Literal["dice", "jaccard", "volume_ref", "volume_pred", "volume_diff", "hd", "hd95", "assd", "masd",
                     "asd_pred_to_ref", "asd_ref_to_pred", "nsd",
                     # detection, over the whole test set (DigestPath 2019): recall at precision > min_precision,
                     # normal-region FP score max(fp_score_max - FPs, 0), normal-region FROC
                     "recall", "fp_score", "froc",
                     # image-level classification over the whole test set
                     "auc"]



class MetricSpec(_Strict):
    name: MetricName
    convention: Literal["medpy", "max-directed", "mean-directed", "deepmind"] = "medpy"
    percentile: float = Field(default=95.0, gt=0, le=100)
    tolerance_mm: float = Field(default=1.0, gt=0)


class DetectionSpec(_Strict):
    """How boxes are matched and DigestPath's set-level detection metrics are read (kind: detection)."""

    criterion: Literal["iou", "centre-in-box", "distance"] = "iou"
    threshold: float | None = Field(default=0.3, description="IoU (>=) or distance in px; None for centre-in-box")
    matching: Literal["greedy"] = "greedy"
    min_precision: float = Field(default=0.2, ge=0, lt=1, description="recall is read where precision > this")
    normal_fp_rates: list[Annotated[float, Field(gt=0)]] = Field(
        default=[1, 2, 4, 8, 16, 32], min_length=1, description="FPs per normal (negative) image for the FROC")
    fp_score_max: float = Field(default=100, gt=0, description="fp_score = max(fp_score_max - normal FPs, 0)")
    max_detections: int = Field(default=5000, ge=1, description="boxes per image; more is an invalid output")
    max_json_mb: float = Field(default=16, gt=0, description="size cap of one output JSON file")

    @model_validator(mode="after")
    def _threshold(self) -> DetectionSpec:
        if self.criterion == "centre-in-box" and self.threshold is not None:
            raise ValueError("threshold: must be null for criterion 'centre-in-box'")
        if self.criterion == "iou" and not (self.threshold is not None and 0 < self.threshold <= 1):
            raise ValueError(f"threshold: an IoU in (0, 1] for criterion 'iou', got {self.threshold!r}")
        if self.criterion == "distance" and not (self.threshold is not None and self.threshold >= 0):
            raise ValueError(f"threshold: a distance >= 0 px for criterion 'distance', got {self.threshold!r}")
        return self


class EmptyPolicySpec(_Strict):
    """What a metric is when a mask is empty (see arena.metrics.EmptyPolicy). ``reference_empty: exclude``
    leaves a label out of a case whenever the case's reference lacks it, whatever was predicted (PDDCA /
    MICCAI 2015: a gland absent from the reference is not scored); the default ``score`` scores it (a
    prediction there gets Dice 0 and the one-empty distance)."""

    both_empty: Literal["exclude", "perfect"] = "exclude"
    reference_empty: Literal["score", "exclude"] = "score"
    one_empty_distance: Union[Literal["diagonal", "nan"], Annotated[float, Field(gt=0)]] = "diagonal"


class RankingSpec(_Strict):
    """How a phase's board is ranked (pure functions in arena.leaderboard.ranking/statistics).

    ``method``: ``aggregate-then-rank`` (the ``statistic`` of ``primary`` over cases and labels),
    ``rank-then-aggregate`` (mean of per case × label × metric ranks over ``metrics``),
    ``mean-of-metric-ranks`` (StructSeg 2019: each of ``metrics`` as the label-weighted mean of organ
    means, ranked separately; overall = mean of the metric ranks) or ``digestpath-2019`` (recall at
    precision > 0.2, normal-region FP score, normal-region FROC; mean rank). ``phases`` overrides any of
    these keys for one phase (``for_phase``).
    """

    method: Literal["aggregate-then-rank", "rank-then-aggregate", "mean-of-metric-ranks",
                    "digestpath-2019"] = "aggregate-then-rank"
    primary: MetricName = "dice"
    label_weights: bool = Field(default=True, description="weight per-label means by the labels' weights")
    statistic: Literal["mean", "median"] = Field(default="mean",
                                                 description="aggregate over cases (aggregate-then-rank)")
    metrics: list[MetricName] | None = Field(default=None, description="metrics ranked by rank-then-aggregate / "
                                             "mean-of-metric-ranks; None: all of the task's metrics")
    team_entry: Literal["best", "latest"] = Field(default="best", description="the submission that represents a team")
    worst: dict[MetricName, float] = Field(default={}, description="value of a missing or failed case per metric "
                                           "(default: 0 for dice/jaccard/nsd, the empty-mask distance for distances)")
    bootstrap: int = Field(default=1000, ge=0,
                           description="bootstrap resamples over cases for rank intervals (0: none)")
    seed: int = Field(default=0, description="bootstrap seed")
    phases: dict[str, RankingSpec] = Field(default={}, description="per-phase overrides of these keys, by phase slug")

    @field_validator("metrics")
    @classmethod
    def _metrics_once(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"a non-empty list of distinct metrics, got {v}")
        return v

    @field_validator("phases")
    @classmethod
    def _flat_overrides(cls, v: dict[str, RankingSpec]) -> dict[str, RankingSpec]:
        for slug, o in v.items():
            if o.phases:
                raise ValueError(f"phase overrides without nested 'phases' (phase {slug!r})")
        return v

    @field_serializer("phases")
    def _dump_overrides(self, v: dict[str, RankingSpec], info: Any) -> dict[str, Any]:
        # only the keys a phase sets, so that a dumped spec reloads with the same overrides
        return {slug: o.model_dump(mode=info.mode, exclude_unset=True) for slug, o in v.items()}

    def for_phase(self, slug: str) -> RankingSpec:
        """This ranking with the keys set under ``phases.<slug>`` replacing the task-wide ones."""
        o = self.phases.get(slug)
        base = self.model_copy(update={"phases": {}})
        if o is None:
            return base
        return base.model_copy(update={k: getattr(o, k) for k in o.model_fields_set})


class PhaseSpec(_Strict):
    """A phase. ``visibility``, ``opens``, ``closes`` and ``reveal`` are the phase's starting settings: they
    apply when the phase is first created (``arena task load``, a task.yaml upload); afterwards the
    organizer pages own them and a re-load does not overwrite an organizer's edits. Without ``opens`` a
    new phase starts closed (no submissions) and, without ``visibility``, hidden (only organizers see its
    board). Times are UTC (a time with an offset is converted)."""

    slug: str = Field(pattern=SLUG)
    title: str
    cases: list[str] | None = Field(default=None, description="case ids; None: assigned when cases are loaded")
    submission_limit: int = Field(default=5, ge=0, description="submissions per team per day")
    show_case_results: bool = Field(default=True, description="participants see their per-case scores, logs "
                                    "permitting; false: per run only its status, one coarse outcome, how many "
                                    "cases ended in each outcome and the total runtime to one significant digit "
                                    "(arena.disclosure); the board still shows the phase's aggregate scores")
    show_logs: bool = Field(default=True, description="participants see container logs")
    visibility: Literal["public", "hidden", "private"] = Field(
        default="hidden", description="public: anyone sees the board; hidden: only organizers see the board, "
        "teams see their own submissions; private: scores hidden even from the team until ``reveal``")
    opens: dt.datetime | None = Field(default=None, description="submissions accepted from (UTC); absent: the "
                                      "phase starts closed until an organizer opens it")
    closes: dt.datetime | None = Field(default=None, description="submissions accepted until (UTC); needs opens")
    reveal: dt.datetime | None = Field(default=None, description="hidden scores and boards shown from (UTC)")

    @field_validator("opens", "closes", "reveal")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v

    @model_validator(mode="after")
    def _dates(self) -> PhaseSpec:
        if self.closes is not None and self.opens is None:
            raise ValueError("closes: needs opens (without opens a phase starts closed; an organizer opens it)")
        if self.closes is not None and self.opens is not None and self.closes <= self.opens:
            raise ValueError(f"closes: after opens ({self.opens:%Y-%m-%d %H:%M}), got {self.closes:%Y-%m-%d %H:%M}")
        return self


class ResourceSpec(_Strict):
    time_per_case_s: float = Field(default=600, gt=0)
    memory_mb: int = Field(default=4096, ge=64)
    cpus: float = Field(default=1.0, gt=0)
    pids: int = Field(default=256, ge=16)
    shm_mb: int = Field(default=256, ge=1)
    tmp_mb: int = Field(default=1024, ge=1)
    output_mb: int = Field(default=1024, ge=1)
    gpu: bool = False
    time_per_evaluation_s: float | None = Field(default=None, gt=0, description="wall clock for all cases together")
    fail_fast: bool = Field(default=False, description="stop at the first failed case; the rest are skipped")


class DataSpec(_Strict):
    """Where a task's cases come from (``arena task load`` / ``arena task check``).

    ``generator``: a synthetic case generator by name (``arena.tasks.store.GENERATORS``), used by
    ``--demo-data N``. ``loader``: a Python file next to task.yaml whose ``cases(data_root)`` lists real
    cases (read from the shared data root, ``ARENA_SHARED_DATA`` or ``../shared/data`` beside the repo),
    loaded by ``arena task load`` without ``--demo-data``. ``folder``: the loader's own folder below the data
    root (``openkbp``); ``arena task load --data DIR`` points it elsewhere. ``requires``: paths below that
    folder (or the data root) the loader needs; when one is missing the load is skipped with the reason.
    A loader may also define ``training(data_folder)`` listing the task's training cases (never scored:
    offered to participants as the training-data archive).
    """

    generator: str | None = Field(default=None, pattern=SLUG)
    loader: str | None = None
    folder: str | None = Field(default=None, description="the data folder below the shared data root (e.g. "
                               "openkbp); the loader and ``requires`` then work inside it, and ``arena task load "
                               "--data DIR`` names another folder instead")
    requires: list[str] = []

    _relative = field_validator("loader")(lambda v: v if v is None else _relative_path(v, "the task folder"))
    _folder = field_validator("folder")(lambda v: v if v is None else _relative_path(v, "the shared data root"))


class TaskSpec(_Strict):
    slug: str = Field(pattern=SLUG)
    title: str
    description: str = ""
    kind: Literal["segmentation", "detection"]
    modality: str
    io_mode: Literal["per-case", "batch"] = "per-case"
    inputs: list[InputSocket] = Field(min_length=1)
    outputs: list[OutputSocket] = Field(min_length=1)
    labels: dict[int, LabelSpec] = Field(min_length=1)
    metrics: list[MetricSpec] = Field(min_length=1)
    empty_policy: EmptyPolicySpec = EmptyPolicySpec()
    ranking: RankingSpec = RankingSpec()
    phases: list[PhaseSpec] = Field(min_length=1)
    resources: ResourceSpec = ResourceSpec()
    detection: DetectionSpec = Field(default=DetectionSpec(), description="matching and metric options (kind: detection)")
    reference_models: list[str] = []
    literature: str | None = Field(default=None, description="CSV of published per-label results, relative to task.yaml")
    data: DataSpec | None = Field(default=None, description="case generator / loader of the task folder")

    @field_validator("labels")
    @classmethod
    def _label_ids(cls, v: dict[int, LabelSpec]) -> dict[int, LabelSpec]:
        bad = [k for k in v if not 1 <= k <= 255]
        if bad:
            raise ValueError(f"label ids between 1 and 255 (0 is background), got {bad}")
        names = [s.name for s in v.values()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"unique label names, got duplicates {dup}")
        return dict(sorted(v.items()))

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        slugs = [p.slug for p in self.phases]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"phases: unique phase slugs, got {slugs}")
        metric_names = [m.name for m in self.metrics]
        if len(set(metric_names)) != len(metric_names):
            raise ValueError(f"metrics: each metric once, got {metric_names}")
        if self.ranking.primary not in metric_names:
            raise ValueError(f"ranking.primary: one of the task's metrics {metric_names}, got {self.ranking.primary!r}")
        if "auc" in metric_names and not any(o.kind == "value" for o in self.outputs):
            raise ValueError("metrics: 'auc' needs an output of kind 'value' (the image-level probability)")
        problems = kind_for(self).check_spec(self)  # what the task's kind requires (arena/kinds)
        if problems:
            raise ValueError(problems[0])
        return self

    # -- helpers used by the runner and the leaderboard -------------------------------------
    def phase(self, slug: str) -> PhaseSpec:
        for p in self.phases:
            if p.slug == slug:
                return p
        raise KeyError(f"task {self.slug} has no phase {slug!r} (phases: {[p.slug for p in self.phases]})")

    @property
    def segmentation_output(self) -> OutputSocket:
        return next(o for o in self.outputs if o.kind == "segmentation")

    def output_of_kind(self, kind: str) -> OutputSocket | None:
        return next((o for o in self.outputs if o.kind == kind), None)

    @property
    def has_set_metrics(self) -> bool:
        """Some metrics are computed over the whole test set (detection, AUC), not per case."""
        return any(m.name in SET_METRICS for m in self.metrics)

    def metric(self, name: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == name)

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        """Whether a larger ``metric`` is better (arena.metrics.directions, the one definition)."""
        return higher_is_better(metric)


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _format_error(err: dict) -> str:
    loc = _format_loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after"))))
    typ, msg = err["type"], err["msg"]
    if typ == "extra_forbidden":
        return f"{loc}: unknown key (check its spelling)"
    if typ == "missing":
        return f"{loc}: missing required key"
    if typ == "literal_error":
        return f"{loc}: expected {msg.removeprefix('Input should be ')}, got {err.get('input')!r}"
    if typ == "string_pattern_mismatch":
        return f"{loc}: expected lowercase letters, digits and '-', got {err.get('input')!r}"
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f", got {got!r}"
    return f"{loc}: expected {msg[0].lower() + msg[1:]}{shown}" if msg else f"{loc}: invalid{shown}"


def parse_spec(data: object, path: Path | str = "<task.yaml>") -> TaskSpec:
    """Validate an already-loaded mapping; raise TaskSpecError naming ``path`` and each bad key."""
    if not isinstance(data, dict):
        raise TaskSpecError(path, [f"(top level): expected a mapping of keys, got {type(data).__name__}"])
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as e:
        raise TaskSpecError(path, [_format_error(err) for err in e.errors()]) from None


def load_spec(path: Path | str) -> TaskSpec:
    """Read and validate ``path`` (a task.yaml, or a task folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "task.yaml"
    if not path.is_file():
        raise TaskSpecError(path, ["file not found (expected tasks/<slug>/task.yaml)"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise TaskSpecError(path, [f"{where}not valid YAML ({getattr(e, 'problem', e)})"]) from None
    spec = parse_spec(data, path)
    if spec.slug != path.parent.name and re.fullmatch(SLUG, path.parent.name):
        raise TaskSpecError(path, [f"slug: expected the folder's name {path.parent.name!r}, got {spec.slug!r}"])
    if spec.literature and not (path.parent / spec.literature).is_file():
        raise TaskSpecError(path, [f"literature: expected a file next to task.yaml, {spec.literature!r} not found"])
    if spec.literature:
        from arena.tasks.literature import load_literature  # lazy: pandas only when a task has one

        try:
            load_literature(path.parent / spec.literature, spec)
        except ValueError as e:
            raise TaskSpecError(path, [f"literature: {e}"]) from None
    return spec


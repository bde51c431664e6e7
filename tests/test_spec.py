"""Task spec validation: the shipped task loads; broken ones name the file, the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arena.tasks.spec import TaskSpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
HAN = REPO / "tasks" / "han-oar-22" / "task.yaml"


def test_han_oar_22_declares_structseg_organs_and_weights():
    spec = load_spec(HAN.parent)
    assert len(spec.labels) == 22
    names = {lab: s.name for lab, s in spec.labels.items()}
    weights = {s.name: s.weight for s in spec.labels.values()}
    assert names[1] == "BrainStem" and names[22] == "Mandible_R"
    assert weights["Eye_L"] == 100 and weights["Lens_R"] == 50 and weights["OpticNerve_L"] == 80
    assert weights["OpticChiasm"] == 50 and weights["Pituitary"] == 80 and weights["TemporalLobe_R"] == 80
    assert weights["SpinalCord"] == 100 and weights["Parotid_L"] == 50 and weights["InnerEar_L"] == 70
    assert weights["MiddleEar_R"] == 70 and weights["TMJ_L"] == 60 and weights["Mandible_L"] == 100
    assert [m.name for m in spec.metrics] == ["dice", "hd95"]
    assert spec.metric("hd95").convention == "medpy"
    assert [p.slug for p in spec.phases] == ["validation", "test"]


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(HAN.read_text())
    mutate(data)
    d = tmp_path / data.get("slug", "x")
    d.mkdir(exist_ok=True)
    (d / "task.yaml").write_text(yaml.safe_dump(data))
    return d / "task.yaml"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.__setitem__("metrcs", d.pop("metrics")), ["metrcs: unknown key", "metrics: missing required key"]),
    (lambda d: d["phases"][1].__setitem__("sulg", "x"), ["phases.1.sulg: unknown key"]),
    (lambda d: d.__setitem__("kind", "classification"), ["kind: expected 'segmentation' or 'detection', got 'classification'"]),
    (lambda d: d["metrics"][1].__setitem__("convention", "scipy"), ["metrics.1.convention: expected 'medpy', 'max-directed'"]),
    (lambda d: d["labels"].__setitem__(0, {"name": "Background"}), ["labels: expected label ids between 1 and 255"]),
    (lambda d: d["labels"][3].__setitem__("name", "Eye_L"), ["labels: expected unique label names, got duplicates ['Eye_L']"]),
    (lambda d: d["labels"][4].__setitem__("weight", -5), ["labels.4.weight: expected"]),
    (lambda d: d["resources"].__setitem__("time_per_case_s", "soon"), ["resources.time_per_case_s: expected"]),
    (lambda d: d["ranking"].__setitem__("primary", "nsd"), ["ranking.primary: one of the task's metrics"]),
    (lambda d: d["phases"].append(dict(d["phases"][0])), ["unique phase slugs"]),
    (lambda d: d["outputs"][0].__setitem__("relative_path", "../etc"), ["outputs.0.relative_path: expected a relative path"]),
])
def test_errors_name_file_key_and_expectation(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate)
    with pytest.raises(TaskSpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg, msg


def test_slug_must_match_folder(tmp_path):
    d = tmp_path / "other-name"
    d.mkdir()
    (d / "task.yaml").write_text(HAN.read_text())
    with pytest.raises(TaskSpecError, match="slug: expected the folder's name 'other-name'"):
        load_spec(d)


def test_not_yaml_and_not_mapping_and_missing(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "task.yaml").write_text("slug: [unclosed\n")
    with pytest.raises(TaskSpecError, match=r"line \d+, column \d+: not valid YAML"):
        load_spec(d)
    (d / "task.yaml").write_text("- just\n- a list\n")
    with pytest.raises(TaskSpecError, match="expected a mapping of keys, got list"):
        load_spec(d)
    with pytest.raises(TaskSpecError, match="file not found"):
        load_spec(tmp_path / "nowhere")


def test_cli_validate_reports_error(tmp_path):
    from click.testing import CliRunner

    from arena.cli import main

    path = _write(tmp_path, lambda d: d.__setitem__("modalty", "CT"))
    res = CliRunner().invoke(main, ["task", "validate", str(path.parent)])
    assert res.exit_code == 2
    assert "modalty: unknown key" in res.output
    ok = CliRunner().invoke(main, ["task", "validate", str(HAN.parent)])
    assert ok.exit_code == 0 and "22 labels" in ok.output


@pytest.mark.parametrize("task_dir", sorted(p.parent for p in (REPO / "tasks").glob("*/task.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_task_passes_its_own_check(task_dir):
    """`arena task check` on each shipped task: the spec, the README, the literature, its real cases (where
    the shared data is there) or one generated case of its kind — tile tasks included."""
    from arena.tasks.check import check_task

    res = check_task(task_dir)
    assert not res.problems, res.problems
    assert res.cases, f"{task_dir.name}: no case checked"

"""A han-oar-22 task whose cases have real image files and whose fake submissions have real outputs, for the
case viewer's web and browser tests (no Docker: the outputs are written where the runner keeps them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from arena.models import MetricValue

from web_helpers import fake_submission, make_user

REPO = Path(__file__).resolve().parents[1]
SPACING_XYZ = (1.2, 1.2, 3.0)


def _org_alice_bob(db):
    """Users org (admin), alice (team alpha) and bob (team beta); returns alice and bob."""
    make_user(db, "org", admin=True)
    return make_user(db, "alice", team="alpha")[0], make_user(db, "bob", team="beta")[0]


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(img, str(path), True)
    return path


def synthetic_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A small CT-like volume (z, y, x) = (16, 48, 56) in HU and a reference with labels 1 and 2."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:16, 0:48, 0:56]
    body = ((y - 24) / 20.0) ** 2 + ((x - 28) / 24.0) ** 2 < 1
    ct = np.where(body, 40, -1000) + rng.normal(0, 15, body.shape)
    ct[((y - 24) / 6.0) ** 2 + ((x - 28) / 6.0) ** 2 < 1] = 700  # a "spine"
    ref = np.zeros(body.shape, np.uint8)
    ref[4:12, 14:24, 14:24] = 1
    ref[5:10, 28:36, 34:44] = 2
    return ct.astype(np.int16), ref


def openkbp_patients(shared_data: Path, n: int = 2) -> list[str]:
    """The ``n`` OpenKBP validation patients with the most organs contoured (names as in cases.json)."""
    import json

    rows = json.loads((shared_data / "openkbp" / "cases.json").read_text())
    rows = [r for r in rows if r["openkbp_split"] == "validation"]
    rows.sort(key=lambda r: (-len(r["present"]), r["patient"]))
    return [r["patient"] for r in rows[:n]]


def _model_output(ref: np.ndarray, n: int) -> np.ndarray:
    """A plausible model output: the reference, moved by one voxel along x for odd ``n``, with organ
    ``n`` grown by a voxel."""
    from scipy import ndimage

    pred = np.roll(ref, n % 2, axis=2)
    grown = ndimage.binary_dilation(pred == n)
    pred[grown & (pred == 0)] = n
    return pred


def viewer_task(db, settings, openkbp: Path | None = None):
    """A task with two cases per phase, users org (admin), alice (team alpha), bob (team beta), and
    submissions: alice's and bob's in validation, a reference model's in validation, alice's in test.
    Synthetic volumes in han-oar-22; with ``openkbp`` (the shared data folder's ``openkbp``), real OpenKBP
    CTs and clinical contours in han-oar-openkbp, read where they lie (never copied), and the outputs' scores
    computed. Returns ``(task, {name: submission})``."""
    from arena.models import Case
    from arena.tasks.store import upsert_task

    task = upsert_task(db, REPO / "tasks" / ("han-oar-openkbp" if openkbp else "han-oar-22"))
    patients = openkbp_patients(openkbp.parent, 4) if openkbp else []
    for phase in task.phases:
        for i in range(2):
            key = f"{phase.slug}-{i:03d}"
            if openkbp:
                pt = patients.pop(0)
                image, reference = openkbp / f"{pt}_ct.nii.gz", openkbp / f"{pt}_oars.nii.gz"
            else:
                ct, ref = synthetic_case(i)
                d = settings.cases_dir / task.slug / key
                image, reference = _write(d / "image.mha", ct), _write(d / "reference.mha", ref)
            case = Case(task=task, key=key, image_path=str(image), reference_path=str(reference), meta={})
            db.add(case)
            phase.cases.append(case)
    db.flush()
    alice, bob = _org_alice_bob(db)
    refbot, _ = make_user(db, "refbot", team="Reference models")
    refbot.team.is_reference = True
    subs = {"alice": fake_submission(db, settings, task, "validation", alice, dice=0.7),
            "bob": fake_submission(db, settings, task, "validation", bob, dice=0.6),
            "reference": fake_submission(db, settings, task, "validation", refbot, dice=0.9),
            "alice-test": fake_submission(db, settings, task, "test", alice, dice=0.5)}
    for n, (name, sub) in enumerate(subs.items()):
        ev = sub.evaluations[-1]
        for cr in ev.case_results:
            out = settings.results_dir / f"evaluation-{ev.id}" / cr.case.key / "images" / "oar-segmentation" / "o.mha"
            if openkbp:
                ref_img = sitk.ReadImage(cr.case.reference_path)
                pred = sitk.GetImageFromArray(_model_output(sitk.GetArrayFromImage(ref_img), n + 1))
                pred.CopyInformation(ref_img)
                out.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(pred, str(out), True)
                cr.output_path = str(out)
                for mv in list(cr.metrics):  # the fake scores give way to the real ones
                    cr.metrics.remove(mv)
                db.flush()
                cr.metrics = _scores(sitk.GetArrayFromImage(pred), sitk.GetArrayFromImage(ref_img),
                                     tuple(reversed(ref_img.GetSpacing())))
                continue
            _, ref = synthetic_case(int(cr.case.key[-1]))
            pred = np.roll(ref, n + 1, axis=2)  # each model off by a different number of voxels
            cr.output_path = str(_write(out, pred))
            cr.metrics.append(MetricValue(label=1, metric="nsd", value=0.5))
    db.commit()
    return task, subs


def _scores(pred: np.ndarray, ref: np.ndarray, spacing) -> list:
    from arena.metrics.segmentation import EmptyPolicy, score_segmentation

    scores = score_segmentation(pred, ref, spacing, range(1, 8), "medpy", 95.0, 2.0,
                                EmptyPolicy(reference_empty="exclude"))
    return [MetricValue(label=lab, metric=m, value=vals[m]) for lab, vals in scores.items()
            for m in ("dice", "hd95", "nsd")]


def tile_task(db, settings):
    """signet-ring-cells with one synthetic positive tile per phase (the kind's own demo cases), users org, alice
    (alpha) and bob (beta), and submissions: alice's in validation and test, bob's in validation. Each output
    holds the reference boxes but the first (missed), every box at probability 0.9, and one false positive at
    0.3 far from any cell. Returns ``(task, {name: submission})``."""
    import json

    from arena.kinds import kind_for
    from arena.models import Case
    from arena.tasks.store import spec_of, upsert_task

    task = upsert_task(db, REPO / "tasks" / "signet-ring-cells")
    spec = spec_of(task)
    kind = kind_for(spec)
    for phase in [p for p in task.phases if p.slug in ("validation", "test")]:
        key = f"{phase.slug}-000"
        demo = kind.write_demo_case(spec, settings.cases_dir / task.slug, key, 0, "small", True)
        case = Case(task=task, key=key, image_path=str(demo.image), reference_path=str(demo.reference), meta={})
        db.add(case)
        phase.cases.append(case)
    db.flush()
    alice, bob = _org_alice_bob(db)
    subs = {"alice": fake_submission(db, settings, task, "validation", alice),
            "bob": fake_submission(db, settings, task, "validation", bob),
            "alice-test": fake_submission(db, settings, task, "test", alice)}
    for sub in subs.values():
        ev = sub.evaluations[-1]
        for cr in ev.case_results:
            ref = json.loads(Path(cr.case.reference_path).read_text())
            boxes = [{**b, "probability": 0.9} for b in ref["boxes"][1:]]
            boxes.append({"corners": [[1, 1, 0], [9, 1, 0], [9, 9, 0], [1, 9, 0]], "probability": 0.3})
            out = settings.results_dir / f"evaluation-{ev.id}" / cr.case.key / "cell-detections.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"type": "Multiple 2D bounding boxes", "boxes": boxes,
                                       "version": {"major": 1, "minor": 0}}))
            cr.output_path = str(out)
    db.commit()
    return task, subs

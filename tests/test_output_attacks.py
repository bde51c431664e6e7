"""Outputs built to make the worker read what it must not, each through a real `arena worker`.

A participant's output image is read on the worker's host. Before, a MetaImage header with
``ElementDataFile = <the case's stored reference>`` made the worker score the hidden ground truth as the
participant's prediction (Dice 1.000 on every organ, #1 on the board), and a header naming a host file
made the host read it. Each vector here is one algorithm image; one burst worker runs them all, and each
case must fail as ``invalid-output`` naming the problem, with every organ scored as missed.

Also checked through the same worker: a container learns nothing of where it runs (its input's name,
/proc/self/mountinfo: no case key, evaluation id, worker or store path), and only declared outputs are
kept on the worker's disk (the rest is counted and discarded, with a line in the case log).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from arena.lifecycle import SubmissionStatus
from arena.models import Case, Evaluation

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.docker, pytest.mark.redis, pytest.mark.slow]

ATTACK = r'''
import gzip, json, os, shutil, struct
import numpy as np, SimpleITK as sitk
cfg = json.load(open("/attack.json"))
vec = cfg["vector"]
d = "/input/images/ct"
img = sitk.ReadImage(os.path.join(d, os.listdir(d)[0]))
size, sp, org, dr = img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()
out = "/output/images/oar-segmentation"
os.makedirs(out, exist_ok=True)
# what a container can learn of where it runs (the test checks: nothing)
print("MOUNTINFO " + open("/proc/self/mountinfo").read().replace("\n", " | "))
print("INPUTS " + open("/input/inputs.json").read().replace("\n", " "))
print("FILES " + " ".join(os.listdir(d)))

def j(v):
    return " ".join(repr(float(x)) if isinstance(x, float) else str(x) for x in v)

def mha(datafile, extra):
    return ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"TransformMatrix = {j(dr)}\nOffset = {j(org)}\nElementSpacing = {j(sp)}\nDimSize = {j(size)}\n"
            f"{extra}ElementType = {cfg.get('etype', 'MET_UCHAR')}\nElementDataFile = {datafile}\n")

def nrrd(datafile):
    axes = " ".join("(" + ",".join(repr(dr[3 * r + c] * sp[c]) for r in range(3)) + ")" for c in range(3))
    return (f"NRRD0004\ntype: uint8\ndimension: 3\nspace: left-posterior-superior\nsizes: {j(size)}\n"
            f"space directions: {axes}\nspace origin: ({','.join(map(repr, org))})\nencoding: raw\n"
            f"endian: little\nbyte skip: -1\ndata file: {datafile}\n\n")

def valid(name="out.mha"):
    seg = sitk.Image(size, sitk.sitkUInt8)
    seg.CopyInformation(img)
    sitk.WriteImage(seg, os.path.join(out, name))

if vec == "mha-reference":  # the case's own hidden reference, read as this output's voxels
    open(f"{out}/out.mha", "w").write(mha(cfg["target"], cfg["extra"]))
elif vec == "mha-host-file":  # any file of the host: no knowledge needed with HeaderSize = -1
    open(f"{out}/out.mha", "w").write(mha("/usr/sbin/dockerd", "HeaderSize = -1\n"))
elif vec == "nrrd-detached":
    open(f"{out}/out.nrrd", "w").write(nrrd(cfg["target"]))
elif vec == "mhd-pair":  # a header and its own data file: the data file could as well be any other
    valid("out.mhd")
elif vec == "nrrd-named-nifti":  # the content, not the extension, would choose the reader
    open(f"{out}/out.nii.gz", "w").write(nrrd(cfg["target"]))
elif vec == "nifti-pair":  # a NIfTI ni1 header whose voxels live in a second file
    valid("out.hdr")
    with open(f"{out}/out.hdr", "rb") as f, gzip.open(f"{out}/out.nii.gz", "wb") as g:
        g.write(f.read())
    os.remove(f"{out}/out.hdr")
elif vec == "junk":  # a valid output and 40 MB besides
    valid()
    with open("/output/junk.bin", "wb") as f:
        f.write(os.urandom(40 * 2**20))
    os.makedirs("/output/cache/deep", exist_ok=True)
    open("/output/cache/deep/notes.txt", "w").write("x" * 1000)
else:
    valid()
'''

# vector -> what the case error must say
REFUSED = {
    "mha-reference": "names another file",
    "mha-host-file": "names another file",
    "nrrd-detached": "names another file",
    "mhd-pair": "keep their voxels in a second file",
    "nrrd-named-nifti": "is not a readable image",
    "nifti-pair": "only single-file NIfTI",
}


def _stored_header(path: Path) -> tuple[str, str]:
    """The MetaImage lines that make a header read ``path``'s own voxels (its header length, compression
    and size, as SimpleITK wrote them), and its ElementType: what an attacker learns from any such file."""
    raw = path.read_bytes()
    end = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    fields = dict(line.split(" = ", 1) for line in raw[:end].decode().splitlines())
    extra = f"HeaderSize = {end}\n"
    if fields.get("CompressedData") == "True":
        extra += f"CompressedData = True\nCompressedDataSize = {fields['CompressedDataSize']}\n"
    return extra, fields["ElementType"]


@pytest.fixture
def attack_run(settings, db, redis_url, docker_engine, base_image, tmp_path, arena_env, monkeypatch):
    """han-oar-22 with one validation case; one validated submission per attack; one burst worker."""
    from arena.config import load_settings
    from arena.images.build import build_image
    from arena.runner.jobs import create_evaluation
    from arena.submissions.intake import StoredUpload, create_submission
    from arena.tasks.store import load_demo_cases, upsert_task
    from arena.users import create_user

    task = upsert_task(db, REPO / "tasks" / "han-oar-22")
    load_demo_cases(db, settings, task, 2)  # demo-000 → validation, demo-001 → test
    case = next(c for c in task.cases if c.key == "demo-000")
    extra, etype = _stored_header(Path(case.reference_path))
    user, _ = create_user(db, "mallory", team="Team Mallory")
    ctx = tmp_path / "attack-image"
    ctx.mkdir()
    (ctx / "attack.py").write_text(ATTACK)
    subs = {}
    for vec in [*REFUSED, "junk", "valid"]:
        (ctx / f"{vec}.json").write_text(json.dumps({"vector": vec, "target": case.reference_path, "extra": extra,
                                                     "etype": etype}))
        (ctx / f"Dockerfile.{vec}").write_text(f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nCOPY attack.py /attack.py\n"
                                               f"COPY {vec}.json /attack.json\nENTRYPOINT [\"python3\", \"/attack.py\"]\n")
        image_id = build_image(str(ctx), f"arena-test/attack-{vec}:1", base_image, log=lambda s: None,
                               dockerfile=f"Dockerfile.{vec}")
        sub = create_submission(db, "han-oar-22", "validation", user,
                                StoredUpload(settings.uploads_dir / "x.tar", "0" * 64, 1), label=vec)
        sub.set_status(SubmissionStatus.VALIDATED)
        sub.image_id = image_id
        subs[vec] = sub.id
    db.commit()
    monkeypatch.setenv("ARENA_REDIS_URL", redis_url)
    evs = {vec: create_evaluation(load_settings(), sid) for vec, sid in subs.items()}
    env = {**os.environ, **arena_env, "ARENA_REDIS_URL": redis_url}
    res = subprocess.run([sys.executable, "-m", "arena.cli", "worker", "--burst"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    db.expire_all()
    return {vec: db.get(Evaluation, ev_id) for vec, ev_id in evs.items()}, case


def _only_case(ev: Evaluation):
    (cr,) = ev.case_results
    return cr


def test_hostile_outputs_through_a_real_worker(attack_run, settings):
    """One worker run, three promises (each checked below): header tricks are refused, a container learns
    nothing of where it runs, only declared outputs are kept."""
    evs, case = attack_run
    _headers_cannot_read_other_files(evs, case)
    _container_learns_nothing_of_where_it_runs(evs, case, settings)
    _only_declared_outputs_are_kept(evs, settings)


def _headers_cannot_read_other_files(evs: dict, case: Case) -> None:
    reference = sitk.GetArrayFromImage(sitk.ReadImage(case.reference_path))
    present = {int(v) for v in np.unique(reference) if v}
    for vec, phrase in REFUSED.items():
        cr = _only_case(evs[vec])
        assert cr.status.value == "failed" and cr.failure == "invalid-output", (vec, cr.status, cr.failure, cr.error)
        assert phrase in cr.error, (vec, cr.error)
        dice = {m.label: m.value for m in cr.metrics if m.metric == "dice"}
        assert all(dice[lab] == 0.0 for lab in present), (vec, dice)  # scored as missed, never as the truth
    # The first vector is real: the file kept from that case, read by a plain SimpleITK call as the worker
    # did before, IS the hidden reference (that is what scored Dice 1.000).
    cr = _only_case(evs["mha-reference"])
    kept = Path(cr.output_path)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(kept))), reference)


def _container_learns_nothing_of_where_it_runs(evs: dict, case: Case, settings) -> None:
    ev = evs["valid"]
    cr = _only_case(ev)
    assert cr.status.value == "succeeded", cr.error
    log = cr.log_tail
    mountinfo = re.search(r"MOUNTINFO (.*)", log).group(1)
    inputs = re.search(r"INPUTS (.*)", log).group(1)
    files = re.search(r"FILES (.*)", log).group(1)
    assert "/input" in mountinfo and "/output" in mountinfo  # the line is what the container saw
    for secret in (case.key, str(settings.home), f"evaluation-{ev.id}", f"{socket.gethostname()}-", "/cases/"):
        for seen, where in ((mountinfo, "mountinfo"), (inputs, "inputs.json"), (files, "/input/images/ct")):
            assert secret not in seen, f"{where} reveals {secret!r}: {seen[:500]}"
    # the input's name is random, and inputs.json gives the same name
    name = json.loads(inputs)[0]["image"]["name"]
    assert name == files.strip() and re.fullmatch(r"[0-9a-f-]{36}\.mha", name)


def _only_declared_outputs_are_kept(evs: dict, settings) -> None:
    ev = evs["junk"]
    cr = _only_case(ev)
    assert cr.status.value == "succeeded", cr.error
    kept = sorted(str(p.relative_to(settings.results_dir / f"evaluation-{ev.id}"))
                  for p in (settings.results_dir / f"evaluation-{ev.id}").rglob("*") if p.is_file())
    assert kept == ["demo-000/images/oar-segmentation/out.mha"], kept
    assert re.search(r"discarded 2 file\(s\), 40\.0 MB, that are not declared outputs", cr.log_tail), cr.log_tail[-500:]
    # nothing of any run is left in the run folders
    assert not list(settings.run_root.iterdir())

"""Collecting and checking container outputs: links are never followed, geometry and labels must match."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from arena.runner.collect import CollectError, collect_outputs
from arena.runner.contract import OutputError, find_segmentation_output, prepare_case_input
from arena.runner.output_check import check_segmentation, read_checked_output
from arena.tasks.spec import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[1] / "tasks" / "han-oar-22")


def test_collect_skips_links_and_devices(tmp_path):
    src, dest = tmp_path / "out", tmp_path / "dest"
    (src / "images" / "oar-segmentation").mkdir(parents=True)
    (src / "images" / "oar-segmentation" / "output.mha").write_bytes(b"data")
    os.symlink("/etc/passwd", src / "passwd")
    os.symlink("/etc", src / "etc-dir")
    os.mkfifo(src / "fifo")
    got = collect_outputs(src, dest)
    assert got.files == ["images/oar-segmentation/output.mha"]
    assert sorted(s.split(" ")[0] for s in got.skipped) == ["etc-dir", "fifo", "passwd"]
    assert not (dest / "passwd").exists() and not (dest / "etc-dir").exists()
    assert (dest / "images/oar-segmentation/output.mha").read_bytes() == b"data"


def test_collect_caps(tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * 100)
    with pytest.raises(CollectError, match="more than 3 files"):
        collect_outputs(src, tmp_path / "d1", max_files=3)
    with pytest.raises(CollectError, match="more than"):
        collect_outputs(src, tmp_path / "d2", max_bytes=250)


def test_prepare_input_layout(tmp_path):
    img = tmp_path / "demo-000.mha"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(img))
    target = prepare_case_input(SPEC, img, tmp_path / "input")
    assert target.parent == tmp_path / "input" / "images" / "ct" and target.suffix == ".mha"
    import json

    inputs = json.loads((tmp_path / "input" / "inputs.json").read_text())
    # the name a container sees is random (the file's own), never the hidden case's key
    assert inputs[0]["interface"]["slug"] == "ct-image" and inputs[0]["image"]["name"] == target.name
    assert "demo" not in target.name and len(target.stem) >= 32
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_find_output_errors(tmp_path):
    with pytest.raises(OutputError, match="no output: expected one .mha file in /output/images/oar-segmentation/ "
                                         r"\(/output is empty\)"):
        find_segmentation_output(tmp_path, SPEC)
    (tmp_path / "wrong.mha").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"found: wrong.mha"):
        find_segmentation_output(tmp_path, SPEC)
    d = tmp_path / "images" / "oar-segmentation"
    d.mkdir(parents=True)
    (d / "a.mha").write_bytes(b"x")
    (d / "b.mha").write_bytes(b"x")
    with pytest.raises(OutputError, match="2 images"):
        find_segmentation_output(tmp_path, SPEC)


def _img(arr, spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0)):
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    im.SetOrigin(origin)
    return im


def test_check_segmentation():
    ref = _img(np.zeros((4, 5, 6), np.uint8))
    good = _img(np.full((4, 5, 6), 3, np.uint8))
    assert check_segmentation(good, ref, {3}).shape == (4, 5, 6)
    cases = [
        (_img(np.zeros((4, 5, 7), np.uint8)), "output size \\(7, 5, 4\\) differs"),
        (_img(np.zeros((4, 5, 6), np.uint8), spacing=(1, 1, 2.5)), "output spacing"),
        (_img(np.zeros((4, 5, 6), np.uint8), origin=(0, 0, 1)), "output origin"),
        (_img(np.zeros((4, 5, 6), np.float32)), "expected an integer label map"),
        (_img(np.full((4, 5, 6), 40, np.uint8)), r"label values not in the task's label map: \[40\]"),
        (_img(np.full((4, 5, 6), -1, np.int16)), "negative label values"),
        (_img(np.zeros((5, 6), np.uint8), spacing=(1, 1)), "2-D"),
    ]
    for out, msg in cases:
        with pytest.raises(OutputError, match=msg):
            check_segmentation(out, ref, {3})


def test_unreadable_output(tmp_path):
    p = tmp_path / "output.mha"
    p.write_bytes(b"not an image")
    with pytest.raises(OutputError, match="is not a readable image"):
        read_checked_output(p, _img(np.zeros((4, 5, 6), np.uint8)), {1})


def test_checked_array_outlives_the_image(tmp_path):
    """Regression: the array once was a view into a freed SimpleITK buffer (scores of 0 at random)."""
    import gc

    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:4, 2:5] = 3
    p = tmp_path / "out.mha"
    sitk.WriteImage(_img(arr), str(p))
    got = read_checked_output(p, _img(np.zeros_like(arr)), {3})
    gc.collect()
    _ = [np.ones(10_000) for _ in range(100)]
    assert got.flags.writeable and got.flags.owndata  # a copy, not a view into the image
    assert (got == arr).all()


# -- participant output headers and the jail they are read in ------------------------------------------------

def _written(tmp_path: Path, name: str) -> Path:
    img = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8))
    p = tmp_path / name
    sitk.WriteImage(img, str(p))
    return p


@pytest.mark.parametrize("name", ["ok.mha", "ok.nii.gz", "ok.nrrd", "ok.tif"])
def test_self_contained_outputs_pass_the_header_check(tmp_path, name):
    from arena.runner.untrusted_reader import check_header

    assert check_header(_written(tmp_path, name)).endswith("ImageIO")


@pytest.mark.parametrize("header, message", [
    ("ObjectType = Image\nNDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\nHeaderSize = -1\n"
     "ElementDataFile = /etc/shadow\n", "names another file"),
    ("NDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\nElementDataFile = ../../cases/x/reference.mha\n",
     "names another file"),
    ("NDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\nElementDataFile = LIST\n", "names another file"),
    ("NDims = 3\nDimSize = 5 4 3\nElementType = MET_UCHAR\n", "no 'ElementDataFile = LOCAL'"),
    ("not a header at all", "is not a readable image"),
])
def test_metaimage_headers_naming_other_files_are_refused(tmp_path, header, message):
    from arena.runner.untrusted_reader import HeaderError, check_header

    p = tmp_path / "out.mha"
    p.write_text(header)
    with pytest.raises(HeaderError, match=message):
        check_header(p)


def test_other_detached_formats_are_refused(tmp_path):
    from arena.runner.untrusted_reader import HeaderError, check_header

    nrrd = tmp_path / "out.nrrd"
    nrrd.write_text("NRRD0004\ntype: uint8\ndimension: 1\nsizes: 4\nencoding: raw\ndata file: /etc/passwd\n\n")
    with pytest.raises(HeaderError, match="names another file"):
        check_header(nrrd)
    with pytest.raises(HeaderError, match="second file"):
        check_header(_written(tmp_path, "pair.mhd"))
    hdr = _written(tmp_path, "pair.hdr")  # NIfTI ni1 (header + .img)
    with gzip.open(tmp_path / "pair.nii.gz", "wb") as g:
        g.write(hdr.read_bytes())
    with pytest.raises(HeaderError, match="only single-file NIfTI"):
        check_header(tmp_path / "pair.nii.gz")
    disguised = tmp_path / "nrrd.nii.gz"  # the extension chooses the reader, never the content
    disguised.write_bytes(nrrd.read_bytes())
    with pytest.raises(HeaderError, match="not gzip"):
        check_header(disguised)
    with pytest.raises(HeaderError, match="not one of the task's output formats"):
        check_header(_written(tmp_path, "ok.nrrd"), ["mha"])


def test_the_jail_sees_only_its_own_file(tmp_path):
    """The program that reads outputs runs as nobody, without network, and sees /usr, Python, the one output
    file and its answer folder: not the store, not the host's secrets."""
    from arena.runner.output_check import _jail_command, jail_problem

    assert jail_problem() is None
    secret = tmp_path / "reference.mha"
    secret.write_text("hidden")
    out = tmp_path / "answer"
    out.mkdir()
    os.chmod(out, 0o777)
    probe = r"""
import json, os, socket
seen = {"uid": os.getuid(), "root": sorted(os.listdir("/")), "in": os.listdir("/in")}
for p in (SECRET, "/etc/shadow", "/etc/passwd", "/root", HOME):
    try:
        open(p).read() if not os.path.isdir(p) else os.listdir(p)
        seen[p] = "readable"
    except OSError as e:
        seen[p] = e.strerror
try:
    socket.create_connection(("127.0.0.1", 6379), timeout=2)
    seen["net"] = "connected"
except OSError as e:
    seen["net"] = e.strerror
print(json.dumps(seen))
""".replace("SECRET", repr(str(secret))).replace("HOME", repr(str(Path.home())))
    cmd = _jail_command(_written(tmp_path, "out.mha"), out, {"mode": "volume"})
    cmd = cmd[:-2] + ["-c", probe]  # the jail as used, another program in it
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen["in"] == ["out.mha"] and "tmp" in seen["root"] and "etc" not in seen["root"]
    assert seen[str(secret)] != "readable" and seen["/etc/shadow"] != "readable"
    if os.geteuid() == 0:
        assert seen["uid"] == 65534
    assert seen["net"] != "connected"


def test_adopt_default_geometry_only_for_the_exact_default_header(tmp_path):
    """grand-challenge's templates write outputs with GetImageFromArray (spacing 1, origin 0, identity): a task
    with outputs[].geometry = adopt-default takes the case image's geometry for those, and only those."""
    ref = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8))
    ref.SetSpacing((0.9, 0.9, 3.0))
    ref.SetOrigin((-100.0, -80.0, 12.5))
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:3, 1:3] = 3
    default = tmp_path / "default.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(default))
    with pytest.raises(OutputError, match="spacing"):
        read_checked_output(default, ref, {3})  # strict, the default
    warnings: list[str] = []
    got = read_checked_output(default, ref, {3}, geometry="adopt-default", warnings=warnings)
    assert np.array_equal(got, arr) and "adopted" in warnings[0]
    shifted = sitk.GetImageFromArray(arr)
    shifted.SetOrigin((1.0, 0.0, 0.0))  # not the default header: a real mistake, still refused
    sitk.WriteImage(shifted, str(tmp_path / "shifted.mha"))
    with pytest.raises(OutputError, match="spacing"):
        read_checked_output(tmp_path / "shifted.mha", ref, {3}, geometry="adopt-default", warnings=[])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 7), np.uint8)), str(tmp_path / "size.mha"))
    with pytest.raises(OutputError, match="size"):
        read_checked_output(tmp_path / "size.mha", ref, {3}, geometry="adopt-default", warnings=[])

"""DICOM series and flipped references: labels must land on the right anatomy (checked by HU), using the
real TotalSegmentator DICOM series whose segmentation is stored y-flipped relative to the DICOM grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
LIVER, AORTA, SPINAL_CORD = 5, 52, 79
BONES = (32, 33, 97, 98, 99, 100, 101, 102, 103, 109, 110, 111, 112, 113, 114, 115)  # T12, T11, ribs


def _hu(ct: np.ndarray, lab: np.ndarray, ids) -> float:
    return float(np.median(ct[np.isin(lab, ids)]))


def test_dicom_series_and_flipped_segmentation(settings, db, shared_data):
    from arena.tasks.convert import read_image
    from arena.tasks.store import add_case, upsert_task

    dicom = shared_data / "totalseg" / "example_ct_dicom"
    seg_path = shared_data / "totalseg" / "example_seg_dicom.nii.gz"
    raw_seg = sitk.ReadImage(str(seg_path))
    series = read_image(dicom)
    assert series.GetSize() == raw_seg.GetSize() == (512, 512, 20)
    assert series.GetDirection()[4] == 1.0 and raw_seg.GetDirection()[4] == -1.0  # y flipped

    task = upsert_task(db, REPO / "tasks" / "abdomen-totalseg")
    from arena.tasks.store import spec_of

    # the DICOM series' segmentation holds 4 labels the task does not score (69, 70, 97, 109): an unknown
    # label value is refused unless the loader maps it explicitly (here: task labels kept, others dropped)
    keep = {k: k for k in spec_of(task).labels}
    case = add_case(db, settings, task, "dicom", dicom, seg_path, task.phases, label_map=keep)
    db.commit()
    assert case.image_path.endswith(".mha") and case.meta["source"] == {"image": "dicom", "reference": "nii.gz"}
    g = case.meta["geometry"]
    assert g["size"] == [512, 512, 20] and g["spacing"][2] == pytest.approx(2.0)
    info = case.meta["reference_resampled"]
    assert info["centre_offset_voxels"] < 0.05  # the same voxel centres, only stored the other way round
    assert all(abs(r - 1) < 1e-6 for r in info["label_volume_ratio"].values())  # no voxel lost or doubled

    img, ref = sitk.ReadImage(case.image_path), sitk.ReadImage(case.reference_path)
    assert img.GetDirection() == ref.GetDirection() == series.GetDirection()
    ct, lab = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref)
    assert np.array_equal(ct, sitk.GetArrayFromImage(series))
    # anatomy by HU: soft tissue liver and aorta, bone vertebrae/ribs, cord in the canal
    assert 20 < _hu(ct, lab, [LIVER]) < 120
    assert 0 < _hu(ct, lab, [AORTA]) < 350
    assert _hu(ct, lab, list(BONES)) > 150
    # and the flip is real: copying the array without reorienting puts the labels on the wrong anatomy
    naive = sitk.GetArrayFromImage(raw_seg)
    assert np.array_equal(np.where(np.isin(naive, list(keep)), naive, 0)[:, ::-1, :], lab)
    assert not 20 < _hu(ct, naive, [LIVER]) < 120 or _hu(ct, naive, list(BONES)) < 150


def test_nifti_totalseg_lungs_are_air(shared_data):
    """On the 3 mm NIfTI pair (same grid) lung lobes have air HU and the liver soft tissue."""
    from arena.tasks.convert import read_image

    ct = sitk.GetArrayFromImage(read_image(shared_data / "totalseg" / "example_ct_sm.nii.gz"))
    lab = sitk.GetArrayFromImage(read_image(shared_data / "totalseg" / "example_seg.nii.gz"))
    assert _hu(ct, lab, [10, 11, 13, 14]) < -600 and 20 < _hu(ct, lab, [LIVER]) < 120


def test_reference_outside_the_image_is_refused(tmp_path):
    from arena.tasks.convert import CaseFormatError, convert_case

    img = sitk.Image(20, 20, 10, sitk.sitkInt16)
    seg = sitk.Image(20, 20, 10, sitk.sitkUInt8)
    seg[5, 5, 5] = 3
    seg.SetOrigin((500.0, 0.0, 0.0))  # nowhere near the image
    sitk.WriteImage(img, str(tmp_path / "ct.mha"))
    sitk.WriteImage(seg, str(tmp_path / "seg.nii.gz"))
    with pytest.raises(CaseFormatError, match="outside the image"):
        convert_case(tmp_path / "ct.mha", tmp_path / "seg.nii.gz", tmp_path / "out")
    (tmp_path / "bad.png").write_bytes(b"x")
    with pytest.raises(CaseFormatError, match="unsupported format"):
        convert_case(tmp_path / "bad.png", tmp_path / "seg.nii.gz", tmp_path / "out")

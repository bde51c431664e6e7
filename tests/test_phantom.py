"""Tests for the synthetic head-and-neck CT phantom (arena.datasets.phantom)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import SimpleITK as sitk

from arena.datasets.phantom import (
    HAN_OAR_22,
    SIZE_PRESETS,
    generate_case,
    generate_case_arrays,
    parse_size,
    write_case,
)

EXPECTED_LABELS = [
    "BrainStem", "Eye_L", "Eye_R", "Lens_L", "Lens_R", "OpticNerve_L", "OpticNerve_R",
    "OpticChiasm", "TemporalLobe_L", "TemporalLobe_R", "Pituitary", "Parotid_L", "Parotid_R",
    "InnerEar_L", "InnerEar_R", "MiddleEar_L", "MiddleEar_R", "TMJ_L", "TMJ_R", "SpinalCord",
    "Mandible_L", "Mandible_R",
]
LR_PAIRS = [(2, 3), (4, 5), (6, 7), (9, 10), (12, 13), (14, 15), (16, 17), (18, 19), (21, 22)]


@functools.lru_cache(maxsize=None)
def case(seed: int, size: str = "small") -> tuple[sitk.Image, sitk.Image]:
    return generate_case(seed, size)


def arrays(seed: int, size: str = "small") -> tuple[np.ndarray, np.ndarray]:
    ct, lab = case(seed, size)
    return sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(lab)


def physical_centroid(img: sitk.Image, mask: np.ndarray) -> np.ndarray:
    zyx = np.argwhere(mask).mean(axis=0)
    return np.asarray(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))


def test_label_map_is_structseg_order():
    assert list(HAN_OAR_22) == list(range(1, 23))
    assert list(HAN_OAR_22.values()) == EXPECTED_LABELS


def test_same_seed_is_identical_and_different_seeds_differ():
    a_ct, a_lab = generate_case(11, "small")
    b_ct, b_lab = generate_case(11, "small")
    assert np.array_equal(sitk.GetArrayFromImage(a_ct), sitk.GetArrayFromImage(b_ct))
    assert np.array_equal(sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(b_lab))
    c_ct, c_lab = generate_case(12, "small")
    lab_a, lab_c = sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(c_lab)
    assert not np.array_equal(sitk.GetArrayFromImage(a_ct), sitk.GetArrayFromImage(c_ct))
    # visibly different anatomy, not just different noise: many label voxels change
    assert np.count_nonzero(lab_a != lab_c) > 0.05 * np.count_nonzero(lab_a)


@pytest.mark.parametrize("seed", range(21))
def test_all_22_labels_present_on_small(seed):
    result = generate_case_arrays(seed, "small")
    counts = np.bincount(result.labels.ravel(), minlength=23)
    missing = [HAN_OAR_22[i] for i in range(1, 23) if counts[i] == 0]
    assert not missing, f"seed {seed}: missing {missing}"
    assert result.labels.max() <= 22
    # present because they are big enough, not because of the one-voxel fallback
    assert result.forced_labels == ()


@pytest.mark.parametrize("size", ["small", "medium"])
def test_geometry_types_and_centring(size):
    ct, lab = case(0, size)
    shape, spacing = SIZE_PRESETS[size]
    assert ct.GetPixelID() == sitk.sitkInt16
    assert lab.GetPixelID() == sitk.sitkUInt8
    for img in (ct, lab):
        assert img.GetSize() == shape
        assert np.allclose(img.GetSpacing(), spacing)
        assert np.allclose(img.GetDirection(), np.eye(3).ravel())
    assert ct.GetSize() == lab.GetSize()
    assert ct.GetOrigin() == lab.GetOrigin()
    assert ct.GetSpacing() == lab.GetSpacing()
    assert ct.GetDirection() == lab.GetDirection()
    centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in shape])
    assert np.allclose(centre, 0.0, atol=1e-6)
    # the head (everything labelled above the neck) is centred near the physical origin
    ct_a, lab_a = arrays(0, size)
    head = physical_centroid(lab, (lab_a == 9) | (lab_a == 10) | (lab_a == 1) | (lab_a == 2) | (lab_a == 3))
    assert np.all(np.abs(head[:2]) < 25.0) and abs(head[2]) < 40.0, head
    # air at the corners of the field of view
    assert abs(float(ct_a[:, :3, :3].mean()) + 1000.0) < 15.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_left_organs_at_larger_physical_x(seed):
    _, lab = case(seed)
    _, lab_a = arrays(seed)
    for left, right in LR_PAIRS:
        xl = physical_centroid(lab, lab_a == left)[0]
        xr = physical_centroid(lab, lab_a == right)[0]
        assert xl > xr + 10.0, (HAN_OAR_22[left], xl, HAN_OAR_22[right], xr)
        assert xl > 0 > xr, (HAN_OAR_22[left], xl, HAN_OAR_22[right], xr)


@pytest.mark.parametrize("seed,size", [(0, "small"), (1, "small"), (2, "medium")])
def test_relative_organ_volumes(seed, size):
    _, lab_a = arrays(seed, size)
    counts = np.bincount(lab_a.ravel(), minlength=23)
    for lens, eye, temporal in ((4, 2, 9), (5, 3, 10)):
        assert 0 < counts[lens] < counts[eye] < counts[temporal]
    assert counts[8] < counts[1]  # chiasm smaller than brainstem
    if size == "medium":
        vox_mm3 = float(np.prod(SIZE_PRESETS[size][1]))
        assert 100 < counts[4] * vox_mm3 < 450  # lens ~ 9x5x9 mm
        assert 40_000 < counts[9] * vox_mm3 < 100_000  # temporal lobe ~ 40x70x44 mm


@pytest.mark.parametrize("seed", [0, 5])
def test_plausible_hu(seed):
    ct_a, lab_a = arrays(seed)
    mandible = ct_a[(lab_a == 21) | (lab_a == 22)].mean()
    assert mandible > 800
    for eye in (2, 3):
        assert -30 < ct_a[lab_a == eye].mean() < 40
    assert ct_a[(lab_a == 16) | (lab_a == 17)].mean() < -300  # middle ear: air
    assert ct_a.min() >= -1024


def test_same_seed_same_anatomy_across_sizes():
    small_ct, small_lab = case(4, "small")
    med_ct, med_lab = case(4, "medium")
    for label in (2, 3, 20, 21):
        a = physical_centroid(small_lab, sitk.GetArrayFromImage(small_lab) == label)
        b = physical_centroid(med_lab, sitk.GetArrayFromImage(med_lab) == label)
        assert np.linalg.norm(a - b) < 4.0, (label, a, b)


def test_realistic_preset_grid():
    result = generate_case_arrays(3, "realistic")
    assert result.ct.shape == (100, 512, 512) and result.labels.shape == (100, 512, 512)
    assert result.spacing == (1.0, 1.0, 3.0)
    assert set(np.unique(result.labels)) == set(range(23))
    # 512 mm field of view: the head sits in the middle with lots of air around it
    assert float((result.ct > -500).mean()) < 0.25
    assert np.all(result.ct[:, :100, :] < -800)


def test_explicit_size():
    shape, spacing = parse_size("128x128x48")
    assert shape == (128, 128, 48)
    assert np.allclose(np.multiply(shape, spacing), (270.0, 270.0, 240.0), atol=0.01)
    ct, lab = generate_case(1, "64X64x30")
    assert ct.GetSize() == (64, 64, 30) and lab.GetSize() == (64, 64, 30)


def test_presets():
    assert parse_size("small") == ((96, 96, 40), (2.8, 2.8, 6.0))
    assert parse_size("realistic") == ((512, 512, 100), (1.0, 1.0, 3.0))
    shape, spacing = parse_size("medium")
    assert shape == (192, 192, 64)


@pytest.mark.parametrize("bad", ["", "huge", "12x12", "0x10x10", "10x10x-1", "4x64x64", "64x64x64x2",
                                 "3000x64x64", "1024x1024x1024", "64 by 64 by 64"])
def test_parse_size_rejects_bad_strings(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_bad_seed_rejected():
    with pytest.raises(ValueError):
        generate_case(-1)


def test_write_case(tmp_path):
    meta = write_case(tmp_path, "case-007", seed=7, size="small")
    image = tmp_path / "case-007" / "image.mha"
    reference = tmp_path / "case-007" / "reference.mha"
    assert image.is_file() and reference.is_file()
    assert b"CompressedData = True" in image.read_bytes()[:2000]
    assert meta["case_id"] == "case-007" and meta["seed"] == 7
    assert meta["shape"] == [96, 96, 40] and meta["spacing"] == [2.8, 2.8, 6.0]
    assert meta["labels_present"] == list(range(1, 23))
    ct, lab = generate_case(7, "small")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(image))), sitk.GetArrayFromImage(ct))
    read_lab = sitk.ReadImage(str(reference))
    assert read_lab.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(read_lab), sitk.GetArrayFromImage(lab))
    assert np.allclose(read_lab.GetOrigin(), lab.GetOrigin())
    with pytest.raises(ValueError):
        write_case(tmp_path, "../escape", seed=1)

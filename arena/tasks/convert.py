"""Reading case files in the formats organizers have (.mha/.mhd, .nii/.nii.gz, .nrrd/.nhdr, DICOM series
folders) and converting them to what containers see (``.mha`` unless the task declares another format).

Orientation is kept by physical coordinates: the reference label map is put on the image's grid by
nearest-neighbour resampling through both images' origin, spacing and direction cosines, never by
copying arrays. A segmentation stored flipped relative to its CT (e.g. a NIfTI written with a y-flipped
direction next to a DICOM series) lands on the same anatomy; when the voxel centres coincide (the usual
case: the same grid stored in another axis order or sign) the result is an exact permutation of the
voxels, and :func:`convert_case` records how far the centres were apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

FILE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd", ".nhdr")
OUTPUT_FORMATS = {"mha": ".mha", "nii.gz": ".nii.gz", "nrrd": ".nrrd"}


class CaseFormatError(ValueError):
    """A case file that cannot be read or does not fit its image; the message names the file."""


def suffix(path: str | Path) -> str:
    name = Path(path).name.lower()
    for s in FILE_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(path).suffix.lower()


def is_dicom_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3-D image: a file in one of :data:`FILE_SUFFIXES` or a folder holding one DICOM series."""
    path = Path(path)
    if path.is_dir():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not ids:
            raise CaseFormatError(f"{path}: a folder but no DICOM series in it")
        if len(ids) > 1:
            raise CaseFormatError(f"{path}: {len(ids)} DICOM series in one folder, expected one ({list(ids)[:3]} ...)")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0])
        check_slice_spacing(path, files)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        img = reader.Execute()
    else:
        if not path.is_file():
            raise CaseFormatError(f"{path}: no such file or folder")
        if suffix(path) not in FILE_SUFFIXES:
            raise CaseFormatError(f"{path}: unsupported format {suffix(path)!r}; expected one of "
                                  f"{', '.join(FILE_SUFFIXES)} or a DICOM series folder")
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise CaseFormatError(f"{path}: cannot be read ({str(e).strip().splitlines()[-1]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise CaseFormatError(f"{path}: expected a 3-D scalar image, got dimension {img.GetDimension()} with "
                              f"{img.GetNumberOfComponentsPerPixel()} components")
    return img


def check_slice_spacing(folder: str | Path, files: list[str] | tuple[str, ...], rel_tol: float = 0.01) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced (a missing or duplicated slice).

    Slice positions are read from each file's header (ImagePositionPatient projected on the slice normal
    from ImageOrientationPatient, in mm). Every gap must equal the median gap within ``rel_tol`` (relative)
    plus 1 µm; otherwise :class:`CaseFormatError` names the folder, the two files around the gap and both
    spacings. Series of fewer than three slices, or without position tags, are not checked.
    """
    if len(files) < 3:
        return
    r = sitk.ImageFileReader()
    pos, normal = [], None
    for f in files:
        r.SetFileName(str(f))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise CaseFormatError(f"{f}: DICOM file cannot be read ({str(e).strip().splitlines()[-1]})") from None
        if not r.HasMetaDataKey("0020|0032"):
            return
        if normal is None and r.HasMetaDataKey("0020|0037"):
            o = [float(v) for v in r.GetMetaData("0020|0037").split("\\")]
            normal = np.cross(o[:3], o[3:6])
        pos.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
    normal = np.array([0.0, 0.0, 1.0]) if normal is None else normal
    order = np.argsort([float(np.dot(p, normal)) for p in pos])
    z = np.array([float(np.dot(pos[i], normal)) for i in order])
    gaps = np.diff(z)
    med = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - med) > rel_tol * abs(med) + 1e-3)
    if med <= 0 or len(bad):
        i = int(bad[0]) if len(bad) else 0
        a, b = Path(files[order[i]]).name, Path(files[order[i + 1]]).name
        raise CaseFormatError(
            f"{folder}: DICOM series with uneven slice spacing (a missing or duplicated slice?): "
            f"{gaps[i]:.3g} mm between {a} and {b} (z {z[i]:.2f} → {z[i + 1]:.2f} mm) where the series' "
            f"spacing is {med:.3g} mm; {len(bad)} uneven gap(s) in {len(files)} files")


def read_geometry(path: str | Path) -> dict[str, list]:
    """Geometry of a file from its header only (no pixel data read), or of a DICOM folder (read fully)."""
    path = Path(path)
    if path.is_dir():
        return geometry(read_image(path))
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    return {"size": list(r.GetSize()), "spacing": list(r.GetSpacing()), "origin": list(r.GetOrigin()),
            "direction": list(r.GetDirection())}


def geometry(img: sitk.Image) -> dict[str, list]:
    """Size (voxels), spacing (mm), origin (mm) and direction cosines (row-major 3×3), ITK (x, y, z) order."""
    return {"size": list(img.GetSize()), "spacing": list(img.GetSpacing()), "origin": list(img.GetOrigin()),
            "direction": list(img.GetDirection())}


def same_grid(a: dict[str, list], b: dict[str, list], tol: float = 1e-4) -> bool:
    """Same size, and spacing / origin / direction equal within ``tol`` (relative to the spacing for origins)."""
    if list(a["size"]) != list(b["size"]):
        return False
    sp = min(a["spacing"])
    return (all(abs(x - y) <= tol * max(1.0, abs(x)) for x, y in zip(a["spacing"], b["spacing"]))
            and all(abs(x - y) <= tol * sp for x, y in zip(a["origin"], b["origin"]))
            and all(abs(x - y) <= tol for x, y in zip(a["direction"], b["direction"])))


def _corners(g: dict[str, list]) -> np.ndarray:
    """Physical positions (mm) of the eight corner voxel centres of a grid, sorted for comparison."""
    d = np.array(g["direction"], float).reshape(3, 3)
    pts = []
    for cx in (0, g["size"][0] - 1):
        for cy in (0, g["size"][1] - 1):
            for cz in (0, g["size"][2] - 1):
                pts.append(np.array(g["origin"], float) + d @ (np.array(g["spacing"], float) * (cx, cy, cz)))
    return np.array(sorted(map(tuple, np.round(pts, 6))))


def same_lattice(a: dict[str, list], b: dict[str, list], tol: float = 0.01) -> bool:
    """The same voxel centres in space, possibly stored in another axis order or sign (a NIfTI written
    y-flipped next to its DICOM series): each grid axis has a matching axis in the other one (equal step
    vector up to sign, in mm, and equal number of voxels), and the corner voxel centres coincide within
    ``tol`` voxels. Putting one on the other is then an exact permutation of the voxels."""
    if same_grid(a, b, tol=1e-4):
        return True
    da, db = (np.array(g["direction"], float).reshape(3, 3) for g in (a, b))
    steps_b = [(db[:, j] * b["spacing"][j], b["size"][j]) for j in range(3)]
    sp = min(min(a["spacing"]), min(b["spacing"]))
    used: set[int] = set()
    for i in range(3):
        step = da[:, i] * a["spacing"][i]
        match = next((j for j, (s, n) in enumerate(steps_b) if j not in used and n == a["size"][i]
                      and (np.allclose(step, s, atol=tol * sp) or np.allclose(step, -s, atol=tol * sp))), None)
        if match is None:
            return False
        used.add(match)
    return bool(np.allclose(_corners(a), _corners(b), atol=tol * sp))


def describe_grid(g: dict[str, list]) -> str:
    """``size 128×128×128 voxels, spacing 3.9×3.9×2.5 mm, origin (0, 0, 0) mm, extent 500×500×320 mm``."""
    ext = [n * s for n, s in zip(g["size"], g["spacing"])]
    return (f"size {'×'.join(str(n) for n in g['size'])} voxels, spacing {'×'.join(f'{s:.4g}' for s in g['spacing'])}"
            f" mm, origin ({', '.join(f'{o:.4g}' for o in g['origin'])}) mm, extent "
            f"{'×'.join(f'{e:.4g}' for e in ext)} mm"
            + ("" if np.allclose(np.abs(np.array(g["direction"], float)), np.eye(3).ravel())
               and np.allclose(g["direction"], np.eye(3).ravel()) else
               f", direction ({', '.join(f'{d:.3g}' for d in g['direction'])})"))


def _centre_offset_voxels(src: sitk.Image, dst: sitk.Image) -> float:
    """Largest distance (in destination voxels) from a destination voxel centre to the nearest source centre,
    checked on the eight corner voxels of the destination (both grids are regular, so corners bound it)."""
    worst = 0.0
    size = dst.GetSize()
    for cx in (0, size[0] - 1):
        for cy in (0, size[1] - 1):
            for cz in (0, size[2] - 1):
                p = dst.TransformIndexToPhysicalPoint((cx, cy, cz))
                ci = src.TransformPhysicalPointToContinuousIndex(p)
                q = src.TransformContinuousIndexToPhysicalPoint([round(v) for v in ci])
                d = [abs(a - b) / s for a, b, s in zip(p, q, dst.GetSpacing())]
                worst = max(worst, max(d))
    return worst


def labels_onto(reference: sitk.Image, image: sitk.Image) -> tuple[sitk.Image, dict[str, Any]]:
    """The label map ``reference`` on ``image``'s grid (nearest neighbour through physical coordinates)."""
    info: dict[str, Any] = {"from": geometry(reference)}
    info["centre_offset_voxels"] = round(_centre_offset_voxels(reference, image), 6)
    out = sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, reference.GetPixelID())
    before = np.bincount(sitk.GetArrayViewFromImage(reference).ravel().astype(np.int64))
    after = np.bincount(sitk.GetArrayViewFromImage(out).ravel().astype(np.int64), minlength=len(before))
    lost = [int(lab) for lab in np.flatnonzero(before) if lab and not after[lab]]
    if lost:
        raise CaseFormatError(f"labels {lost} of the reference fall outside the image after matching them by "
                              "physical coordinates: the reference does not belong to this image")
    vb = float(np.prod(reference.GetSpacing()))
    va = float(np.prod(image.GetSpacing()))
    info["label_volume_ratio"] = {int(lab): round(float(after[lab]) * va / (float(before[lab]) * vb), 4)
                                  for lab in np.flatnonzero(before) if lab}
    return out, info


def _as_label_map(img: sitk.Image, path: str | Path) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind == "f":
        if not np.all(np.mod(arr, 1) == 0):
            raise CaseFormatError(f"{path}: a label map must hold integer values, found fractions")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 255:
        raise CaseFormatError(f"{path}: label values between 0 and 255 expected, found {lo}..{hi}")
    return sitk.Cast(img, sitk.sitkUInt8) if img.GetPixelID() != sitk.sitkUInt8 else img


def _as_ct(img: sitk.Image) -> sitk.Image:
    """int16 when the values fit (CT in HU always does), so every stored CT has one pixel type."""
    if img.GetPixelID() == sitk.sitkInt16:
        return img
    arr = sitk.GetArrayViewFromImage(img)
    if arr.dtype.kind in "iu" and arr.size and -32768 <= int(arr.min()) and int(arr.max()) <= 32767:
        return sitk.Cast(img, sitk.sitkInt16)
    return img


def convert_case(image: str | Path, reference: str | Path, dest: str | Path, fmt: str = "mha",
                 label_map: dict[int, int] | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``dest/image.<fmt>`` and ``dest/reference.<fmt>`` from any supported inputs.

    The reference is cast to uint8 (values 0..255 required), optionally relabelled with ``label_map``
    (source id → task id; ids not in it become 0) and, when its grid differs from the image's, resampled
    onto the image grid by physical coordinates. Returns the two paths and metadata: ``geometry`` (the
    image's), ``source`` (formats) and ``reference_resampled`` when that happened.
    """
    if fmt not in OUTPUT_FORMATS:
        raise CaseFormatError(f"output format {fmt!r}: expected one of {sorted(OUTPUT_FORMATS)}")
    ext = OUTPUT_FORMATS[fmt]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    img = _as_ct(read_image(image))
    ref = _as_label_map(read_image(reference), reference)
    if label_map is not None:
        lut = np.zeros(256, np.uint8)
        for src, dst in label_map.items():
            lut[int(src)] = int(dst)
        arr = lut[sitk.GetArrayViewFromImage(ref)]
        relabelled = sitk.GetImageFromArray(arr)
        relabelled.CopyInformation(ref)
        ref = relabelled
    meta: dict[str, Any] = {"geometry": geometry(img),
                            "source": {"image": "dicom" if Path(image).is_dir() else suffix(image).lstrip("."),
                                       "reference": "dicom" if Path(reference).is_dir()
                                       else suffix(reference).lstrip(".")}}
    if not same_grid(geometry(ref), geometry(img)):
        ref, info = labels_onto(ref, img)
        meta["reference_resampled"] = info
    else:
        ref.CopyInformation(img)  # equal within tolerance: make it bit-identical for the output checks
    img_dst, ref_dst = dest / f"image{ext}", dest / f"reference{ext}"
    for im in (img, ref):  # source header items (NIfTI descrip, DICOM tags) stay out of what containers see
        for k in im.GetMetaDataKeys():
            im.EraseMetaData(k)
    sitk.WriteImage(img, str(img_dst), True)
    sitk.WriteImage(ref, str(ref_dst), True)
    return img_dst, ref_dst, meta


def diagonal_mm(geom: dict[str, list]) -> float:
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(geom["size"], geom["spacing"])))

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
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
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

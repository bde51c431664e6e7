#!/usr/bin/env python3
"""Threshold + connected-components head-and-neck OAR segmenter (example Arena algorithm).

A deliberately simple, model-free participant algorithm for the Arena / grand-challenge
container contract:

* reads the single ``.mha`` CT under ``$ARENA_INPUT_DIR/images/ct/`` (default ``/input``),
* may read ``$ARENA_INPUT_DIR/inputs.json`` (only logged),
* writes exactly one file, ``$ARENA_OUTPUT_DIR/images/oar-segmentation/output.mha`` (default
  ``/output``): a uint8 label map with the input's size, spacing, origin and direction, using the
  StructSeg 2019 ids (Eye_L 2, Eye_R 3, Lens_L 4, Lens_R 5, Mandible_L 21, Mandible_R 22).

It segments:

* the eyes: voxels in a vitreous window around 5 HU, opened, split into connected components; the
  two roughly spherical components of plausible volume that are most anterior are the eyes, and the
  one at larger physical x is Eye_L (LPS: +x is the patient's left);
* the lenses: bright (> ~55 HU) voxels in the front of each eye;
* the mandible: bone (> 600 HU) below the eyes, the largest anterior connected component, split at
  the head's midline x into Mandible_L / Mandible_R.

Task modes (environment variable ``SEGMENTER_TASK``, set at build time with ``--build-arg TASK=...``;
default ``han-oar-22``, the behaviour above):

* ``han-oar-9`` (MICCAI 2015 / PDDCA ids): the same mandible as one organ, id 3; eyes and lenses are not
  in that label map and are left out;
* ``han-oar-openkbp`` (OpenKBP ids): the mandible by HU threshold (> 450 HU after smoothing): the most
  anterior bone component of at least 20 cm3, closed and hole-filled, id 7;
* ``thoracic-oar-6`` (StructSeg thoracic ids): air inside the body, per axial slice: small round components
  near the midline are the trachea (6), the large ones the lungs, left (1) or right (2) of the midline by
  their centroid.

Only the Python standard library, NumPy (>= 1.24) and SimpleITK are used; no network, no writes
outside the output directory (the root filesystem may be read-only).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import SimpleITK as sitk

EYE_L, EYE_R, LENS_L, LENS_R, MANDIBLE_L, MANDIBLE_R = 2, 3, 4, 5, 21, 22

VITREOUS_HU = (-40.0, 22.0)  # window around vitreous (~5 HU), below soft tissue (~40 HU)
EYE_VOLUME_MM3 = (1500.0, 20000.0)
EYE_MAX_ELONGATION = 1.8
LENS_MIN_HU = 45.0
BONE_HU = 600.0  # half-way between soft tissue and mandible cortical bone
MANDIBLE_MIN_VOLUME_MM3 = 5000.0


def log(message: str) -> None:
    print(f"[threshold-segmenter] {message}", flush=True)


def fail(message: str, code: int = 2) -> None:
    print(f"[threshold-segmenter] error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def find_input(input_dir: str) -> str:
    ct_dir = os.path.join(input_dir, "images", "ct")
    if not os.path.isdir(ct_dir):
        fail(f"input directory {ct_dir} does not exist (expected one CT .mha there)")
    files = sorted(f for f in os.listdir(ct_dir) if f.lower().endswith(".mha"))
    if len(files) != 1:
        fail(f"expected exactly one .mha file in {ct_dir}, found {len(files)}: {files[:5]}")
    return os.path.join(ct_dir, files[0])


def log_inputs_json(input_dir: str) -> None:
    path = os.path.join(input_dir, "inputs.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)
        slugs = [e.get("interface", {}).get("slug") for e in entries]
        log(f"inputs.json lists sockets {slugs}")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log(f"warning: could not read inputs.json ({exc}); continuing")


def to_image(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.CopyInformation(reference)
    return img


def coord_axis(img: sitk.Image, axis: int, region: tuple[slice, slice, slice] | None = None) -> np.ndarray:
    """Physical coordinate ``axis`` (0=x, 1=y, 2=z; mm) of every voxel, as a float32 (z, y, x) array.

    ``region`` optionally restricts it to a box of NumPy (z, y, x) slices."""
    size = img.GetSize()
    region = region or (slice(None),) * 3
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    ix = np.arange(size[0])[region[2]] * (direction[axis, 0] * spacing[0])
    iy = np.arange(size[1])[region[1]] * (direction[axis, 1] * spacing[1])
    iz = np.arange(size[2])[region[0]] * (direction[axis, 2] * spacing[2]) + origin[axis]
    return (ix.astype(np.float32)[None, None, :] + iy.astype(np.float32)[None, :, None]
            + iz.astype(np.float32)[:, None, None])


def components(mask: np.ndarray, reference: sitk.Image
               ) -> tuple[np.ndarray, sitk.LabelShapeStatisticsImageFilter]:
    """Connected components of ``mask`` relabelled by size (1 = largest), with shape statistics."""
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(to_image(mask, reference), False))
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(cc)
    return sitk.GetArrayFromImage(cc), stats


def opening_radius(spacing: tuple[float, ...]) -> list[int]:
    radius = [int(min(3, max(0, round(2.0 / s)))) for s in spacing]
    if max(radius) == 0:
        radius = [1 if s == min(spacing) else 0 for s in spacing]
    return radius


def segment_eyes(smooth: np.ndarray, body: np.ndarray, ct: sitk.Image):
    """Return a list of (label, mask, centroid, radius_mm) for the eyes found (0 or 2)."""
    window = (smooth > VITREOUS_HU[0]) & (smooth < VITREOUS_HU[1]) & body
    opened = sitk.BinaryMorphologicalOpening(to_image(window, ct), opening_radius(ct.GetSpacing()))
    cc, stats = components(sitk.GetArrayFromImage(opened) > 0, ct)
    candidates = []
    for lab in stats.GetLabels():
        volume = stats.GetPhysicalSize(lab)
        if not EYE_VOLUME_MM3[0] <= volume <= EYE_VOLUME_MM3[1]:
            continue
        if stats.GetElongation(lab) > EYE_MAX_ELONGATION:
            continue
        candidates.append((lab, np.asarray(stats.GetCentroid(lab)), stats.GetEquivalentSphericalRadius(lab)))
    best, best_score = None, None
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            ci, cj = candidates[i][1], candidates[j][1]
            dx, dz = abs(ci[0] - cj[0]), abs(ci[2] - cj[2])
            if not (35.0 <= dx <= 100.0 and dz <= 20.0 and abs(ci[1] - cj[1]) <= 25.0):
                continue
            score = 0.5 * (ci[1] + cj[1])  # LPS: smaller y is more anterior
            if best_score is None or score < best_score:
                best, best_score = (candidates[i], candidates[j]), score
    if best is None:
        log(f"eyes: no plausible pair among {len(candidates)} candidate components")
        return []
    left, right = sorted(best, key=lambda c: -c[1][0])  # larger physical x = patient left
    eyes = []
    for label, (lab, centroid, radius) in ((EYE_L, left), (EYE_R, right)):
        eyes.append((label, cc == lab, centroid, radius))
        log(f"eyes: {'Eye_L' if label == EYE_L else 'Eye_R'} at ({centroid[0]:.1f}, {centroid[1]:.1f}, "
            f"{centroid[2]:.1f}) mm, {stats.GetPhysicalSize(lab) / 1000.0:.1f} cm3")
    return eyes


def segment_lens(smooth: np.ndarray, eye_mask: np.ndarray, centroid: np.ndarray, radius: float,
                 ct: sitk.Image) -> np.ndarray | None:
    """Bright voxels in the front of the eye; the component closest to the expected lens position."""
    zz, yy, xx = np.nonzero(eye_mask)
    pad = [int(np.ceil(8.0 / s)) + 1 for s in ct.GetSpacing()]
    region = tuple(slice(max(0, int(v.min()) - p), int(v.max()) + p + 1)
                   for v, p in ((zz, pad[2]), (yy, pad[1]), (xx, pad[0])))
    rel = [coord_axis(ct, axis, region) - centroid[axis] for axis in range(3)]
    dist = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    near = (dist < radius + 4.0) & (rel[1] < -0.3 * radius) & ~eye_mask[region]
    box = near & (smooth[region] > LENS_MIN_HU)
    if not box.any():
        return None
    mask = np.zeros(smooth.shape, bool)
    mask[region] = box
    cc, stats = components(mask, ct)
    target = centroid + np.array([0.0, -(radius - 1.0), 0.0])
    best = min(stats.GetLabels(), key=lambda lab: np.linalg.norm(np.asarray(stats.GetCentroid(lab)) - target))
    if stats.GetPhysicalSize(best) > 1500.0:
        return None
    return cc == best


TASK_MODES = ("han-oar-22", "han-oar-9", "han-oar-openkbp", "thoracic-oar-6")
PDDCA_MANDIBLE, OPENKBP_MANDIBLE = 3, 7
THORAX_LUNG_L, THORAX_LUNG_R, THORAX_TRACHEA = 1, 2, 6


def task_mode() -> str:
    mode = os.environ.get("SEGMENTER_TASK", "han-oar-22").strip() or "han-oar-22"
    if mode not in TASK_MODES:
        fail(f"SEGMENTER_TASK={mode!r}: expected one of {', '.join(TASK_MODES)}")
    return mode


def body_mask(smooth: np.ndarray, ct: sitk.Image) -> np.ndarray:
    cc, stats = components(smooth > -400.0, ct)
    return cc == 1 if stats.GetNumberOfLabels() else np.ones(smooth.shape, bool)


def segment_mandible_anterior(smooth: np.ndarray, ct: sitk.Image) -> np.ndarray | None:
    """The most anterior bone component of at least 20 cm3 (LPS: smallest y), closed and hole-filled."""
    cc, stats = components((smooth > 450.0) & body_mask(smooth, ct), ct)
    big = [lab for lab in stats.GetLabels() if stats.GetPhysicalSize(lab) >= 20000.0]
    if not big:
        log("mandible: no bone component of 20 cm3 or more")
        return None
    lab = min(big, key=lambda b: stats.GetCentroid(b)[1])
    img = to_image(cc == lab, ct)
    img = sitk.BinaryMorphologicalClosing(img, [1, 1, 1])
    img = sitk.BinaryFillhole(img)
    log(f"mandible: {stats.GetPhysicalSize(lab) / 1000.0:.1f} cm3 at y = {stats.GetCentroid(lab)[1]:.1f} mm")
    return sitk.GetArrayFromImage(img) > 0


def segment_thorax(smooth: np.ndarray, ct: sitk.Image) -> np.ndarray:
    """Lungs (left/right of the body midline) and trachea from the air inside the body, slice by slice."""
    out = np.zeros(smooth.shape, np.uint8)
    body = np.zeros(smooth.shape, bool)
    for k in range(smooth.shape[0]):  # body per slice: tissue with its holes (the lungs) filled
        sl = sitk.GetImageFromArray((smooth[k] > -400.0).astype(np.uint8))
        body[k] = sitk.GetArrayFromImage(sitk.BinaryFillhole(sl)) > 0
    cc, stats = components(body, ct)
    if stats.GetNumberOfLabels():
        body = cc == 1
    air = (smooth < -400.0) & body
    xs = coord_axis(ct, 0)
    mid_x = float(xs[body].mean()) if body.any() else 0.0
    px_area = ct.GetSpacing()[0] * ct.GetSpacing()[1]
    for k in range(smooth.shape[0]):
        lab2 = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(air[k].astype(np.uint8))))
        for c in range(1, int(lab2.max()) + 1):
            m = lab2 == c
            area = m.sum() * px_area
            if area < 30.0:
                continue
            cx = float(xs[k][m].mean())
            if area < 700.0 and abs(cx - mid_x) < 25.0:
                out[k][m] = THORAX_TRACHEA
            elif area >= 700.0:
                out[k][m] = THORAX_LUNG_L if cx > mid_x else THORAX_LUNG_R
    log(f"thorax: lungs {int((out == THORAX_LUNG_L).sum())} / {int((out == THORAX_LUNG_R).sum())} voxels (L/R), "
        f"trachea {int((out == THORAX_TRACHEA).sum())}")
    return out


def main() -> int:
    """Per-case mode (grand-challenge layout) or Arena's batch mode (/input/<case-id>/... per case)."""
    input_dir = os.environ.get("ARENA_INPUT_DIR", "/input")
    output_dir = os.environ.get("ARENA_OUTPUT_DIR", "/output")
    if os.path.isdir(os.path.join(input_dir, "images")) or not os.path.isdir(input_dir):
        return segment_case(input_dir, output_dir)
    cases = sorted(d for d in os.listdir(input_dir) if os.path.isfile(os.path.join(input_dir, d, "inputs.json")))
    if not cases:
        fail(f"no input: neither {input_dir}/images/ct/ nor batch case folders with inputs.json")
    log(f"batch mode: {len(cases)} cases")
    for case in cases:
        segment_case(os.path.join(input_dir, case), os.path.join(output_dir, case))
    return 0


def segment_case(input_dir: str, output_dir: str) -> int:
    t0 = time.time()
    path = find_input(input_dir)
    log_inputs_json(input_dir)
    ct = sitk.ReadImage(path)
    if ct.GetDimension() != 3 or ct.GetNumberOfComponentsPerPixel() != 1:
        fail(f"{path}: expected a 3-D scalar CT, got dimension {ct.GetDimension()} with "
             f"{ct.GetNumberOfComponentsPerPixel()} components")
    log(f"read {os.path.basename(path)}: size {ct.GetSize()}, spacing "
        f"{tuple(round(s, 3) for s in ct.GetSpacing())} mm")
    ctf = sitk.Cast(ct, sitk.sitkFloat32)
    sigma = [max(1.0, 0.5 * s) for s in ct.GetSpacing()]
    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(ctf, sigma))
    mode = task_mode()
    if mode == "han-oar-openkbp":
        out = np.zeros(smooth.shape, np.uint8)
        mandible = segment_mandible_anterior(smooth, ct)
        if mandible is not None:
            out[mandible] = OPENKBP_MANDIBLE
        return write_output(out, ct, output_dir, t0)
    if mode == "thoracic-oar-6":
        return write_output(segment_thorax(smooth, ct), ct, output_dir, t0)

    # body: largest component above -400 HU
    cc, stats = components(smooth > -400.0, ct)
    body = cc == 1 if stats.GetNumberOfLabels() else np.ones(smooth.shape, bool)
    body_centroid = np.asarray(stats.GetCentroid(1)) if stats.GetNumberOfLabels() else np.zeros(3)

    out = np.zeros(smooth.shape, np.uint8)
    eyes = segment_eyes(smooth, body, ct)
    for label, mask, _, _ in eyes:
        out[mask] = label
    for label, mask, centroid, radius in eyes:
        lens = segment_lens(smooth, mask, centroid, radius, ct)
        if lens is not None:
            out[lens & (out == 0)] = LENS_L if label == EYE_L else LENS_R
            log(f"lens: {'Lens_L' if label == EYE_L else 'Lens_R'} {int(lens.sum())} voxels")

    # mandible: largest anterior bone component below the eyes, split at the midline
    if eyes:
        eye_c = 0.5 * (eyes[0][2] + eyes[1][2])
        below = coord_axis(ct, 2) < eye_c[2] - 40.0
        anterior_limit = eye_c[1] + 50.0
        midline_x = eye_c[0]
    else:
        below = coord_axis(ct, 2) < body_centroid[2]
        anterior_limit = body_centroid[1]
        midline_x = body_centroid[0]
    cc, stats = components((smooth > BONE_HU) & below & body, ct)
    chosen = None
    for lab in stats.GetLabels():  # sorted by size, largest first
        if stats.GetPhysicalSize(lab) < MANDIBLE_MIN_VOLUME_MM3:
            break
        if stats.GetCentroid(lab)[1] < anterior_limit:
            chosen = lab
            break
    if chosen is None:
        log("mandible: no plausible bone component found")
    else:
        mandible = cc == chosen
        left = coord_axis(ct, 0) >= midline_x
        out[mandible & left] = MANDIBLE_L
        out[mandible & ~left] = MANDIBLE_R
        log(f"mandible: {stats.GetPhysicalSize(chosen) / 1000.0:.1f} cm3, split at x = {midline_x:.1f} mm")

    if mode == "han-oar-9":  # PDDCA ids: one mandible, no eyes or lenses
        out = np.where((out == MANDIBLE_L) | (out == MANDIBLE_R), PDDCA_MANDIBLE, 0).astype(np.uint8)
    return write_output(out, ct, output_dir, t0)


def write_output(out: np.ndarray, ct: sitk.Image, output_dir: str, t0: float) -> int:
    out_dir = os.path.join(output_dir, "images", "oar-segmentation")
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, "output.mha")
    sitk.WriteImage(to_image(out, ct), out_path, True)
    present = sorted(int(v) for v in np.unique(out) if v)
    log(f"wrote {out_path} with labels {present} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

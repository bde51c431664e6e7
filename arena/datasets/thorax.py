"""Deterministic synthetic thorax CT phantom with the 6 StructSeg 2019 thoracic organs at risk.

For demos and tests, not science. Conventions are those of :mod:`arena.datasets.phantom`: physical space
is LPS (``+x`` patient left, ``+y`` posterior, ``+z`` superior), millimetres, identity direction, the grid
centred on the physical origin (about the carina); HU stored as int16, labels as uint8 ids from
:data:`THORACIC_OAR_6`.

Anatomy (canonical frame, then a per-case affine: scale 0.92-1.08 per axis, rotation about z up to
±4°, translation up to ±6 mm, and per-organ jitter):

* body: elliptic cylinder (~340 × 240 mm) with a subcutaneous fat layer (-100 HU) over muscle (40 HU);
* ribs: elliptic bone bands (700 HU) every ~25 mm; sternum anterior; vertebral bodies (cancellous 250 HU,
  cortex 800 HU) with the canal (CSF 10 HU) and the spinal cord (35 HU) inside;
* lungs: two half-domed ellipsoids of parenchyma (-850 HU, with vessels), the mediastinum between them,
  the liver dome (60 HU) under the right base;
* heart (45 HU) in the anterior-left mediastinum; descending aorta (45 HU) left of the spine;
* trachea (wall 40 HU, air lumen) down to the carina, main bronchi (not labelled) below it;
* esophagus (40 HU, collapsed lumen with a little air) between trachea/heart and spine.

One seed gives the same anatomy at every size (parameters are drawn before the grid is touched); the
noise (σ 12 HU) is drawn per slice in slice order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

__all__ = ["THORACIC_OAR_6", "THORAX_SIZE_PRESETS", "ThoraxArrays", "thorax_size", "generate_thorax_arrays",
           "generate_thorax", "write_thorax_case"]

#: StructSeg 2019 task 3 (thoracic OARs) label ids.
THORACIC_OAR_6: dict[int, str] = {1: "Lung_L", 2: "Lung_R", 3: "SpinalCord", 4: "Esophagus", 5: "Heart",
                                  6: "Trachea"}

THORAX_SIZE_PRESETS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    "small": ((96, 80, 40), (4.0, 4.0, 8.0)),  # 384 × 320 × 320 mm, fast tests
    "medium": ((192, 160, 80), (2.0, 2.0, 4.0)),
    "realistic": ((512, 512, 128), (0.9765625, 0.9765625, 2.5)),  # a real thoracic CT grid
}
_FOV_MM = (384.0, 320.0, 320.0)

HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 40.0, "blood": 45.0, "liver": 60.0,
      "bone_cortex": 800.0, "bone_cancellous": 250.0, "rib": 700.0, "csf": 10.0, "cord": 35.0, "wall": 40.0}


def thorax_size(size: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A preset name or ``XxYxZ`` voxels (spacing then covers a 384 × 320 × 320 mm field of view)."""
    key = str(size).strip().lower()
    if key in THORAX_SIZE_PRESETS:
        return THORAX_SIZE_PRESETS[key]
    parts = key.split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size {size!r}: expected one of {sorted(THORAX_SIZE_PRESETS)} or 'XxYxZ' voxels")
    shape = tuple(int(p) for p in parts)
    if not all(8 <= n <= 1024 for n in shape):
        raise ValueError(f"size {size!r}: each dimension between 8 and 1024 voxels")
    return shape, tuple(f / n for f, n in zip(_FOV_MM, shape))  # type: ignore[return-value]


@dataclass
class ThoraxArrays:
    seed: int
    size: str
    ct: np.ndarray  # int16 (z, y, x)
    labels: np.ndarray  # uint8 (z, y, x)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    params: dict[str, Any]

    def to_images(self) -> tuple[sitk.Image, sitk.Image]:
        out = []
        for arr in (self.ct, self.labels):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(self.spacing)
            img.SetOrigin(self.origin)
            out.append(img)
        return out[0], out[1]


def _params(rng: np.random.Generator) -> dict[str, Any]:
    j = lambda s: float(rng.uniform(-s, s))  # noqa: E731
    return {
        "scale": [float(rng.uniform(0.92, 1.08)) for _ in range(3)],
        "angle": math.radians(j(4.0)),
        "shift": [j(6.0), j(6.0), j(6.0)],
        "body": (170.0 + j(8), 118.0 + j(6)), "fat": 12.0 + j(4),
        "lung_l": ((72.0 + j(4), 8.0 + j(4), -5.0 + j(6)), (52.0 + j(4), 72.0 + j(4), 115.0 + j(8))),
        "lung_r": ((-74.0 + j(4), 8.0 + j(4), 0.0 + j(6)), (57.0 + j(4), 74.0 + j(4), 118.0 + j(8))),
        "heart": ((22.0 + j(5), -32.0 + j(4), -62.0 + j(6)), (56.0 + j(4), 46.0 + j(4), 52.0 + j(4))),
        "liver": ((-40.0 + j(5), 5.0 + j(5), -185.0 + j(6)), (125.0, 105.0, 75.0 + j(5))),
        "spine": (0.0 + j(2), 78.0 + j(3)), "vert_r": 18.0 + j(1.5), "canal_r": 8.0, "cord_r": 5.0 + j(0.6),
        "eso": (8.0 + j(2), 42.0 + j(3)), "eso_r": (8.5 + j(1), 6.5 + j(1)),
        "trachea": (0.0 + j(2), 18.0 + j(3)), "trachea_r": 10.0 + j(1), "carina_z": 12.0 + j(6),
        "aorta": (30.0 + j(3), 52.0 + j(3)), "aorta_r": 13.0 + j(1.5),
        "rib_phase": float(rng.uniform(0, 25)),
    }


def generate_thorax_arrays(seed: int, size: str = "small") -> ThoraxArrays:
    """One thorax case as arrays (deterministic in ``seed``)."""
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(int(seed))
    p = _params(rng)
    shape, spacing = thorax_size(size)
    nx, ny, nz = shape
    origin = tuple(-(n - 1) * s / 2.0 for n, s in zip(shape, spacing))
    xs = origin[0] + np.arange(nx, dtype=np.float32) * spacing[0]
    ys = origin[1] + np.arange(ny, dtype=np.float32) * spacing[1]
    X, Y = np.meshgrid(xs, ys)  # (y, x)
    # physical → canonical: undo shift, rotation about z, scale
    c, s = math.cos(p["angle"]), math.sin(p["angle"])
    Xs, Ys = X - p["shift"][0], Y - p["shift"][1]
    U = (c * Xs + s * Ys) / p["scale"][0]
    V = (-s * Xs + c * Ys) / p["scale"][1]
    ct = np.empty((nz, ny, nx), np.int16)
    lab = np.zeros((nz, ny, nx), np.uint8)
    noise_rng = np.random.default_rng(int(seed) + 7919)

    def ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        return ((U - cx) / ax) ** 2 + ((V - cy) / ay) ** 2 <= 1.0

    def ellipsoid_slice(centre, radii, w: float) -> np.ndarray:
        dz = (w - centre[2]) / radii[2]
        if abs(dz) >= 1.0:
            return np.zeros(U.shape, bool)
        k = math.sqrt(1.0 - dz * dz)
        return ellipse(centre[0], centre[1], radii[0] * k, radii[1] * k)

    bx, by = p["body"]
    for k in range(nz):
        z = origin[2] + k * spacing[2]
        w = (z - p["shift"][2]) / p["scale"][2]  # canonical z
        hu = np.full(U.shape, HU["air"], np.float32)
        lb = np.zeros(U.shape, np.uint8)
        body = ellipse(0, 0, bx, by)
        hu[body] = HU["fat"]
        hu[ellipse(0, 0, bx - p["fat"], by - p["fat"])] = HU["muscle"]
        # ribs: bands every 25 mm, a thin elliptic shell inside the muscle wall
        if ((w + p["rib_phase"]) % 25.0) < 9.0:
            shell = ellipse(0, 0, bx - p["fat"] - 6, by - p["fat"] - 6) & ~ellipse(0, 0, bx - p["fat"] - 14,
                                                                                       by - p["fat"] - 14)
            hu[shell & (V > -by + 40)] = HU["rib"]
        hu[(np.abs(U) < 14) & (V < -by + p["fat"] + 20) & (V > -by + p["fat"] + 6)] = HU["bone_cancellous"]
        # lungs (half domes: flatter at the base), liver dome under the right base, mediastinum between
        lungs = {}
        for name, lab_id in (("lung_l", 1), ("lung_r", 2)):
            (cx, cy, cz), (ax, ay, az) = p[name]
            az_eff = az if w >= cz else az * 0.75
            m = ellipsoid_slice((cx, cy, cz), (ax, ay, az_eff), w)
            m &= np.abs(U) > 22.0
            lungs[lab_id] = m
        liver = ellipsoid_slice(*p["liver"], w)
        heart = ellipsoid_slice(*p["heart"], w)
        sx, sy = p["spine"]
        spine_bone = ellipse(sx, sy, p["vert_r"], p["vert_r"]) | (
            ellipse(sx, sy + 24, 15, 13) & ~ellipse(sx, sy + 22, p["canal_r"], p["canal_r"]))
        aorta = ellipse(*p["aorta"], p["aorta_r"], p["aorta_r"]) if w < 60 else np.zeros(U.shape, bool)
        for lab_id, m in lungs.items():
            m &= ~liver & ~heart & ~spine_bone & ~aorta
            hu[m] = HU["lung"]
            lb[m] = lab_id
        # vessels in the lungs: a few bright dots, deterministic in canonical coordinates
        vessels = (np.sin(U * 0.21 + w * 0.05) * np.sin(V * 0.19 - w * 0.04) > 0.985) & (lb > 0)
        hu[vessels] = HU["blood"]
        hu[liver & body] = HU["liver"]
        hu[heart] = HU["blood"]
        lb[heart] = 5
        hu[aorta] = HU["blood"]
        # spine: vertebral body (cortex + cancellous), posterior arch, canal, cord
        hu[ellipse(sx, sy, p["vert_r"], p["vert_r"])] = HU["bone_cortex"]
        hu[ellipse(sx, sy, p["vert_r"] - 3, p["vert_r"] - 3)] = HU["bone_cancellous"]
        hu[ellipse(sx, sy + 24, 15, 13)] = HU["bone_cortex"]
        canal = ellipse(sx, sy + 22, p["canal_r"], p["canal_r"])
        hu[canal] = HU["csf"]
        cord = ellipse(sx, sy + 22, p["cord_r"], p["cord_r"] * 0.8)
        hu[cord] = HU["cord"]
        lb[cord] = 3
        # esophagus (collapsed lumen with a little air); stops at the diaphragm (liver dome)
        ex, ey = p["eso"]
        if w > p["liver"][0][2] + p["liver"][1][2] * 0.6:
            eso = ellipse(ex, ey, *p["eso_r"])
            hu[eso] = HU["wall"]
            hu[ellipse(ex, ey, 2.5, 1.5)] = HU["air"]
            lb[eso] = 4
            lb[eso & (lb != 4)] = 4
        # trachea above the carina; main bronchi (air, unlabelled) below it
        tx, ty = p["trachea"]
        r = p["trachea_r"]
        if w >= p["carina_z"]:
            tr = ellipse(tx, ty, r, r * 0.9)
            hu[tr] = HU["wall"]
            hu[ellipse(tx, ty, r - 2.0, r * 0.9 - 2.0)] = HU["air"]
            lb[tr] = 6
        elif w > p["carina_z"] - 35:
            d = (p["carina_z"] - w) * 1.2
            for side in (1, -1):
                br = ellipse(tx + side * (8 + d), ty + 0.2 * d, 6.5, 6.0)
                hu[br] = HU["wall"]
                hu[ellipse(tx + side * (8 + d), ty + 0.2 * d, 4.5, 4.0)] = HU["air"]
                lb[br & (lb != 5)] = 0
        lb[~body] = 0
        noise = noise_rng.standard_normal(U.shape).astype(np.float32) * 12.0
        hu += noise
        np.clip(np.rint(hu), -1024, 3071, out=hu)
        ct[k] = hu.astype(np.int16)
        lab[k] = lb
    return ThoraxArrays(int(seed), size, ct, lab, tuple(float(v) for v in spacing),
                        tuple(float(v) for v in origin), p)


def generate_thorax(seed: int, size: str = "small") -> tuple[sitk.Image, sitk.Image]:
    """``(ct, labels)`` SimpleITK images (int16 HU, uint8 ids from :data:`THORACIC_OAR_6`)."""
    return generate_thorax_arrays(seed, size).to_images()


def write_thorax_case(directory: str | Path, case_id: str, seed: int, size: str = "small") -> dict[str, Any]:
    """Write ``<directory>/<case_id>/image.mha`` and ``reference.mha``; return metadata (like phantom.write_case)."""
    if not case_id or any(ch in case_id for ch in "/\\") or case_id in (".", ".."):
        raise ValueError(f"invalid case_id {case_id!r}: must be a plain directory name")
    case = generate_thorax_arrays(seed, size)
    ct, labels = case.to_images()
    out = Path(directory) / case_id
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(ct, str(out / "image.mha"), True)
    sitk.WriteImage(labels, str(out / "reference.mha"), True)
    present = np.flatnonzero(np.bincount(case.labels.ravel(), minlength=7))
    return {"case_id": case_id, "seed": int(seed), "size": size, "shape": list(case.ct.shape[::-1]),
            "spacing": list(case.spacing), "origin": list(case.origin),
            "labels_present": [int(v) for v in present if v], "image": str(out / "image.mha"),
            "reference": str(out / "reference.mha")}

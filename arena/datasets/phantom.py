"""Deterministic synthetic head-and-neck CT phantom with the 22 StructSeg 2019 organs at risk.

The phantom is built for demos and tests, not for science: every case is a set of simple
primitives (ellipsoids, elliptic cylinders and capsule tubes) placed in a canonical frame in
millimetres, warped per case by a random global affine plus a smooth sinusoidal displacement, and
rasterised onto a CT-like grid.

Conventions
-----------
* Physical space is LPS (DICOM / ITK): ``+x`` is patient left (so the ``_L`` organs lie at larger
  ``x``), ``+y`` is posterior and ``+z`` is superior. Distances are millimetres.
* The canonical head centre is the physical origin ``(0, 0, 0)``; images have identity direction and
  an origin chosen so the grid is centred on ``(0, 0, 0)``.
* Shapes and spacings are given in ITK order ``(x, y, z)``; NumPy arrays from
  :func:`SimpleITK.GetArrayFromImage` are ``(z, y, x)``.
* CT intensities are Hounsfield units (HU), stored as ``int16``; labels are ``uint8`` ids from
  :data:`HAN_OAR_22` (0 = background).

Everything is deterministic for a given seed (``numpy.random.default_rng(seed)``); the anatomy
parameters are drawn before anything that depends on the grid, so one seed gives the same anatomy at
every size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = [
    "HAN_OAR_22",
    "SIZE_PRESETS",
    "TISSUE_HU",
    "ORGAN_SIZES_MM",
    "PhantomArrays",
    "parse_size",
    "generate_case",
    "generate_case_arrays",
    "write_case",
]

#: Label id -> organ name, StructSeg 2019 head-and-neck OAR order (0 is background).
HAN_OAR_22: dict[int, str] = {
    1: "BrainStem",
    2: "Eye_L",
    3: "Eye_R",
    4: "Lens_L",
    5: "Lens_R",
    6: "OpticNerve_L",
    7: "OpticNerve_R",
    8: "OpticChiasm",
    9: "TemporalLobe_L",
    10: "TemporalLobe_R",
    11: "Pituitary",
    12: "Parotid_L",
    13: "Parotid_R",
    14: "InnerEar_L",
    15: "InnerEar_R",
    16: "MiddleEar_L",
    17: "MiddleEar_R",
    18: "TMJ_L",
    19: "TMJ_R",
    20: "SpinalCord",
    21: "Mandible_L",
    22: "Mandible_R",
}

#: Preset name -> (shape (x, y, z) in voxels, spacing (x, y, z) in mm).
SIZE_PRESETS: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    # 268.8 x 268.8 x 240 mm field of view, coarse: fast tests.
    "small": ((96, 96, 40), (2.8, 2.8, 6.0)),
    # same field of view, twice as fine in-plane.
    "medium": ((192, 192, 64), (1.4, 1.4, 3.75)),
    # a real CT grid: 512 mm field of view (head in the middle, lots of air), 300 mm in z.
    "realistic": ((512, 512, 100), (1.0, 1.0, 3.0)),
}

#: Field of view (x, y, z) in mm used to choose the spacing of an explicit "XxYxZ" size.
EXPLICIT_FOV_MM: tuple[float, float, float] = (270.0, 270.0, 240.0)

#: Tissue -> Hounsfield units before blur and noise.
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "fat": -90.0,
    "soft_tissue": 40.0,
    "skin": 40.0,
    "brain": 35.0,
    "csf": 10.0,
    "eye_vitreous": 5.0,
    "lens": 90.0,
    "optic_nerve": 40.0,
    "optic_chiasm": 40.0,
    "pituitary": 50.0,
    "skull": 1000.0,
    "mandible": 1100.0,
    "vertebra": 500.0,
    "intervertebral_disc": 80.0,
    "petrous_bone": 900.0,
    "sphenoid_bone": 700.0,
    "hard_palate": 700.0,
    "tmj": 500.0,
    "middle_ear": -700.0,
    "inner_ear": 150.0,
    "parotid": -10.0,
    "spinal_cord": 30.0,
    "brainstem": 30.0,
}

#: Nominal full extents (x, y, z) in mm of the labelled organs in the canonical frame, before the
#: per-case jitter and warp (tubes: diameter and path, see the code). For documentation and tests.
ORGAN_SIZES_MM: dict[str, tuple[float, float, float]] = {
    "BrainStem": (24.0, 26.0, 54.0),
    "Eye": (24.0, 24.0, 24.0),  # radius 11-12.5 mm per case
    "Lens": (9.0, 5.0, 9.0),
    "OpticNerve": (5.0, 5.0, 9.0),  # tube cross-section (x/y diameter, z height); ~50 mm long
    "OpticChiasm": (22.0, 10.0, 8.0),
    "TemporalLobe": (40.0, 70.0, 44.0),  # x 0.92-1.08 per case and side
    "Pituitary": (12.0, 10.0, 9.0),
    "Parotid": (24.0, 34.0, 40.0),  # x 0.85-1.15 per axis, case and side
    "InnerEar": (10.0, 10.0, 10.0),
    "MiddleEar": (9.0, 12.0, 12.0),
    "TMJ": (14.0, 12.0, 12.0),
    "SpinalCord": (10.0, 10.0, 160.0),  # tube, runs from the brainstem out of the field of view
    "Mandible": (12.0, 12.0, 24.0),  # body cross-section (x/y 12 mm, z 24 mm) along a U of ~44x58 mm
}

_MAX_VOXELS = 512 * 512 * 600
_MIN_DIM = 8
_MAX_DIM = 2048

_HU = TISSUE_HU
_BIG = np.float32(1.0e6)


# --------------------------------------------------------------------------------------------
# sizes


def parse_size(size: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Resolve a size string to ``(shape, spacing)``.

    Parameters
    ----------
    size:
        A preset name from :data:`SIZE_PRESETS` (``"small"``, ``"medium"``, ``"realistic"``) or an
        explicit grid ``"XxYxZ"`` in voxels, e.g. ``"128x128x48"``. For an explicit grid the spacing
        (mm) is chosen so the field of view is :data:`EXPLICIT_FOV_MM` (270 x 270 x 240 mm), which
        covers the head.

    Returns
    -------
    ``((nx, ny, nz), (sx, sy, sz))``: voxels per axis and spacing in mm, both in (x, y, z) order.

    Raises
    ------
    ValueError
        If the string is neither a preset nor ``XxYxZ`` with each dimension in 8..2048, or the grid
        exceeds 512*512*600 voxels.
    """
    if not isinstance(size, str):
        raise ValueError(f"size must be a string (a preset or 'XxYxZ'), got {type(size).__name__}")
    key = size.strip().lower()
    if key in SIZE_PRESETS:
        shape, spacing = SIZE_PRESETS[key]
        return tuple(shape), tuple(spacing)  # type: ignore[return-value]
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
    if m is None:
        raise ValueError(
            f"invalid phantom size {size!r}: expected one of {sorted(SIZE_PRESETS)} "
            "or an explicit grid 'XxYxZ' in voxels such as '128x128x48'"
        )
    shape = tuple(int(g) for g in m.groups())
    for axis, n in zip("xyz", shape):
        if not _MIN_DIM <= n <= _MAX_DIM:
            raise ValueError(
                f"invalid phantom size {size!r}: {axis} has {n} voxels, expected {_MIN_DIM}..{_MAX_DIM}"
            )
    total = shape[0] * shape[1] * shape[2]
    if total > _MAX_VOXELS:
        raise ValueError(
            f"invalid phantom size {size!r}: {total} voxels is more than the limit of {_MAX_VOXELS}"
        )
    spacing = tuple(round(fov / n, 4) for fov, n in zip(EXPLICIT_FOV_MM, shape))
    return shape, spacing  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# primitives (canonical frame, mm). field() is normalised: <= 1 inside, larger outside.


@dataclass
class _Prim:
    hu: float
    label: int = 0
    #: if set, voxels with canonical x < 0 get this label instead of ``label`` (midline split)
    label_neg_x: int | None = None
    #: optional canonical z limits (mm) of the primitive
    zmin: float | None = None
    zmax: float | None = None

    def _raw_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._raw_bbox()
        lo, hi = lo.copy(), hi.copy()
        if self.zmin is not None:
            lo[2] = max(lo[2], self.zmin)
        if self.zmax is not None:
            hi[2] = min(hi[2], self.zmax)
        return lo, hi

    def _raw_field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        f = self._raw_field(x, y, z)
        if self.zmin is not None:
            f = np.where(z < self.zmin, _BIG, f)
        if self.zmax is not None:
            f = np.where(z > self.zmax, _BIG, f)
        return f


@dataclass
class _Ellipsoid(_Prim):
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    semi: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: 3x3 rotation; columns are the ellipsoid's local axes in the canonical frame
    rot: np.ndarray | None = None

    def _raw_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center, float)
        a = np.asarray(self.semi, float)
        if self.rot is None:
            half = a
        else:
            half = np.sqrt(((self.rot * a[None, :]) ** 2).sum(axis=1))
        return c - half, c + half

    def _raw_field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        cx, cy, cz = (float(v) for v in self.center)
        ax, ay, az = (float(v) for v in self.semi)
        if self.rot is None:
            u = (x - cx) * (1.0 / ax)
            f = u * u
            u = (y - cy) * (1.0 / ay)
            f += u * u
            u = (z - cz) * (1.0 / az)
            f += u * u
            return f
        dx, dy, dz = x - cx, y - cy, z - cz
        f = None
        for i, a in enumerate((ax, ay, az)):
            r = self.rot[:, i]
            u = dx * float(r[0] / a) + dy * float(r[1] / a) + dz * float(r[2] / a)
            f = u * u if f is None else f + u * u
        return f


@dataclass
class _EllipticCylinder(_Prim):
    """Elliptic cylinder along z between ``zmin`` and ``zmax`` (both required)."""

    cx: float = 0.0
    cy: float = 0.0
    ax: float = 1.0
    ay: float = 1.0

    def _raw_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.zmin is not None and self.zmax is not None
        return (
            np.array([self.cx - self.ax, self.cy - self.ay, self.zmin]),
            np.array([self.cx + self.ax, self.cy + self.ay, self.zmax]),
        )

    def _raw_field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        u = (x - self.cx) * (1.0 / self.ax)
        f = u * u
        u = (y - self.cy) * (1.0 / self.ay)
        f += u * u
        return np.broadcast_to(f, np.broadcast_shapes(f.shape, z.shape))


@dataclass
class _Capsule(_Prim):
    """Segment a-b with a round cross-section of ``radius`` mm, stretched per axis by ``scale``.

    The distance is measured in coordinates divided by ``scale``, so ``scale=(1, 1, 2)`` gives a tube
    twice as tall in z as it is wide (used to keep thin tubes on thick slices)."""

    a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    b: tuple[float, float, float] = (0.0, 0.0, 1.0)
    radius: float = 1.0
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def _raw_bbox(self) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(self.a, float)
        b = np.asarray(self.b, float)
        r = self.radius * np.asarray(self.scale, float)
        return np.minimum(a, b) - r, np.maximum(a, b) + r

    def _raw_field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        s = [float(v) for v in self.scale]
        a = [float(self.a[i]) / s[i] for i in range(3)]
        d = [float(self.b[i]) / s[i] - a[i] for i in range(3)]
        dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        px = x * (1.0 / s[0]) - a[0]
        py = y * (1.0 / s[1]) - a[1]
        pz = z * (1.0 / s[2]) - a[2]
        t = px * (d[0] / dd) + py * (d[1] / dd) + pz * (d[2] / dd)
        np.clip(t, 0.0, 1.0, out=t)
        r2 = 1.0 / (self.radius * self.radius)
        u = px - t * d[0]
        f = u * u
        u = py - t * d[1]
        f += u * u
        u = pz - t * d[2]
        f += u * u
        f *= r2
        return f


def _polyline(points: list[tuple[float, float, float]], radius: float, hu: float, label: int = 0,
              scale: tuple[float, float, float] = (1.0, 1.0, 1.0), **kw: Any) -> list[_Prim]:
    return [
        _Capsule(hu=hu, label=label, a=p, b=q, radius=radius, scale=scale, **kw)
        for p, q in zip(points[:-1], points[1:])
    ]


def _rot_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_xyz(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], float)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], float)
    return _rot_z(az) @ ry @ rx


# --------------------------------------------------------------------------------------------
# per-case parameters


def _draw_params(rng: np.random.Generator) -> dict[str, Any]:
    """Draw every random quantity of the anatomy and the warp, in a fixed order."""
    p: dict[str, Any] = {}
    p["scale"] = rng.uniform(0.93, 1.07, 3)
    p["rotation_deg"] = rng.uniform(-5.0, 5.0, 3)
    p["translation_mm"] = rng.uniform(-5.0, 5.0, 3)
    # smooth displacement: per component, 3 plane waves with random direction/wavelength/phase
    waves = []
    for _ in range(3):
        total = rng.uniform(2.0, 4.0)
        w = rng.uniform(0.5, 1.0, 3)
        amps = total * w / w.sum()
        comp = []
        for amp in amps:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            wavelength = rng.uniform(150.0, 280.0)
            k = direction * (2.0 * math.pi / wavelength)
            comp.append((float(amp), k, float(rng.uniform(0.0, 2.0 * math.pi))))
        waves.append(comp)
    p["waves"] = waves
    # anatomy jitter
    p["eye_x"] = rng.uniform(29.5, 33.0, 2)  # [left, right] distance from midline, mm
    p["eye_r"] = rng.uniform(11.0, 12.5, 2)
    p["eye_z"] = rng.uniform(-2.0, 2.0)
    p["temporal_scale"] = rng.uniform(0.92, 1.08, 2)
    p["parotid_scale"] = rng.uniform(0.85, 1.15, (2, 3))
    p["brainstem_scale"] = rng.uniform(0.92, 1.08)
    p["mandible_ab"] = (rng.uniform(41.0, 47.0), rng.uniform(54.0, 62.0))
    p["mandible_z"] = rng.uniform(-80.0, -75.0)
    return p


def _anatomy(p: dict[str, Any]) -> list[_Prim]:
    """Primitives in drawing order (later ones override earlier ones, HU and label)."""
    H = _HU
    prims: list[_Prim] = []
    add = prims.append

    # --- body: skin, subcutaneous fat, soft tissue (head ellipsoid, lower face, neck)
    head_c, head_s = (0.0, 0.0, 0.0), (76.0, 96.0, 108.0)
    face_c, face_s = (0.0, -22.0, -62.0), (67.0, 76.0, 54.0)
    neck = (0.0, 15.0, 52.0, 46.0, -260.0, -40.0)
    for inset, hu in ((0.0, H["skin"]), (2.0, H["fat"]), (7.0, H["soft_tissue"])):
        add(_Ellipsoid(hu=hu, center=head_c, semi=tuple(s - inset for s in head_s)))
        add(_Ellipsoid(hu=hu, center=face_c, semi=tuple(s - inset for s in face_s)))
        add(_EllipticCylinder(hu=hu, cx=neck[0], cy=neck[1], ax=neck[2] - inset, ay=neck[3] - inset,
                              zmin=neck[4], zmax=neck[5]))

    # --- cranium: skull = outer ellipsoids, then brain ellipsoids carve the inside
    skull_t = 6.0
    brain = [((0.0, 10.0, 38.0), (60.0, 80.0, 56.0)), ((0.0, 50.0, -20.0), (45.0, 28.0, 20.0))]
    temporal = []
    for side, sgn in ((0, 1.0), (1, -1.0)):
        ts = float(p["temporal_scale"][side])
        temporal.append(((sgn * 38.0, 4.0, 2.0), (20.0 * ts, 35.0 * ts, 22.0 * ts)))
    for c, s in brain + temporal:
        add(_Ellipsoid(hu=H["skull"], center=c, semi=tuple(v + skull_t for v in s)))
    for c, s in brain:
        add(_Ellipsoid(hu=H["brain"], center=c, semi=s))
    for side, (c, s) in enumerate(temporal):
        add(_Ellipsoid(hu=H["brain"], label=9 + side, center=c, semi=s))
    for sgn in (1.0, -1.0):  # lateral ventricles
        add(_Ellipsoid(hu=H["csf"], center=(sgn * 11.0, 12.0, 45.0), semi=(6.0, 28.0, 10.0)))

    # --- face: orbit fat, air spaces, sphenoid, palate
    ex = [float(p["eye_x"][0]), -float(p["eye_x"][1])]
    er = [float(p["eye_r"][0]), float(p["eye_r"][1])]
    ey, ez = -70.0, float(p["eye_z"])
    for side in (0, 1):
        add(_Ellipsoid(hu=H["fat"], center=(ex[side] * 0.97, -58.0, ez), semi=(17.0, 22.0, 15.0)))
    add(_Ellipsoid(hu=H["air"], center=(0.0, -62.0, -30.0), semi=(11.0, 22.0, 22.0)))  # nasal cavity
    for sgn in (1.0, -1.0):  # maxillary sinuses
        add(_Ellipsoid(hu=H["air"], center=(sgn * 28.0, -50.0, -32.0), semi=(12.0, 14.0, 14.0)))
    add(_Ellipsoid(hu=H["sphenoid_bone"], center=(0.0, -14.0, -30.0), semi=(15.0, 16.0, 11.0)))
    add(_Ellipsoid(hu=H["air"], center=(0.0, -18.0, -30.0), semi=(9.0, 10.0, 6.0)))  # sphenoid sinus
    add(_Ellipsoid(hu=H["hard_palate"], center=(0.0, -45.0, -50.0), semi=(28.0, 30.0, 3.5)))
    prims += _polyline([(0.0, -42.0, -40.0), (0.0, -16.0, -56.0), (0.0, -14.0, -95.0),
                        (0.0, -12.0, -260.0)], 7.0, H["air"])  # naso/oropharynx airway

    # --- ears: petrous bone, external canal, middle ear (air), inner ear
    for side, sgn in ((0, 1.0), (1, -1.0)):
        ang = math.atan2(-25.0, sgn * -35.0)  # long axis from lateral-posterior to medial-anterior
        add(_Ellipsoid(hu=H["petrous_bone"], center=(sgn * 38.0, 18.0, -26.0), semi=(22.0, 8.0, 9.0),
                       rot=_rot_z(ang)))
        add(_Capsule(hu=H["air"], a=(sgn * 82.0, 16.0, -27.0), b=(sgn * 54.0, 16.0, -26.0), radius=3.5))
        add(_Ellipsoid(hu=H["middle_ear"], label=16 + side, center=(sgn * 50.0, 16.0, -26.0),
                       semi=(4.5, 6.0, 6.0)))
        add(_Ellipsoid(hu=H["inner_ear"], label=14 + side, center=(sgn * 39.0, 18.0, -26.0),
                       semi=(5.0, 5.0, 5.0)))

    # --- cervical spine around the cord
    cord = [(0.0, 27.0, -38.0), (0.0, 31.0, -90.0), (0.0, 35.0, -260.0)]
    body_line = [(x, y - 21.0, z) for x, y, z in cord]
    prims += _polyline(cord, 13.0, H["vertebra"], zmax=-48.0)  # neural arch ring
    prims += _polyline(body_line, 12.0, H["vertebra"], zmax=-50.0)  # vertebral bodies
    for k in range(8):  # discs and spinous processes
        zk = -62.0 - 17.0 * k
        yk = float(np.interp(-zk, [-c[2] for c in cord], [c[1] for c in cord]))
        add(_Ellipsoid(hu=H["intervertebral_disc"], center=(0.0, yk - 21.0, zk), semi=(12.5, 12.5, 2.2)))
        add(_Capsule(hu=H["vertebra"], a=(0.0, yk + 10.0, zk + 8.0), b=(0.0, yk + 28.0, zk + 2.0),
                     radius=4.0))
    prims += _polyline(cord, 7.5, H["csf"], zmax=-46.0)  # spinal canal
    prims += _polyline(cord, 5.0, H["spinal_cord"], label=20)

    # --- brainstem, cistern, pituitary, chiasm, optic nerves, eyes, lenses
    bs = float(p["brainstem_scale"])
    add(_Ellipsoid(hu=H["brainstem"], label=1, center=(0.0, 24.0, -14.0),
                   semi=(12.0 * bs, 13.0 * bs, 27.0 * bs)))
    add(_Ellipsoid(hu=H["csf"], center=(0.0, -8.0, -6.0), semi=(16.0, 12.0, 7.0)))  # suprasellar cistern
    add(_Ellipsoid(hu=H["pituitary"], label=11, center=(0.0, -4.0, -15.0), semi=(6.0, 5.0, 4.5)))
    for side in (0, 1):
        sgn = 1.0 if side == 0 else -1.0
        path = [(ex[side] * 0.95, ey + er[side] - 2.0, ez), (sgn * 19.0, -36.0, -3.0),
                (sgn * 7.0, -14.0, -5.0)]
        prims += _polyline(path, 2.5, H["optic_nerve"], label=6 + side, scale=(1.0, 1.0, 1.8))
    add(_Ellipsoid(hu=H["optic_chiasm"], label=8, center=(0.0, -12.0, -5.0), semi=(11.0, 5.0, 4.0)))
    for side in (0, 1):
        add(_Ellipsoid(hu=H["eye_vitreous"], label=2 + side, center=(ex[side], ey, ez),
                       semi=(er[side],) * 3))
        add(_Ellipsoid(hu=H["lens"], label=4 + side, center=(ex[side], ey - er[side] + 3.2, ez),
                       semi=(4.5, 2.5, 4.5)))

    # --- parotids
    for side, sgn in ((0, 1.0), (1, -1.0)):
        s = p["parotid_scale"][side]
        add(_Ellipsoid(hu=H["parotid"], label=12 + side, center=(sgn * 50.0, 16.0, -50.0),
                       semi=(12.0 * s[0], 17.0 * s[1], 20.0 * s[2])))

    # --- mandible: U-shaped body + rami, split at the midline; TMJs on top of the rami
    ma, mb = (float(v) for v in p["mandible_ab"])
    mz, myc = float(p["mandible_z"]), -18.0
    arc = [(ma * math.cos(t), myc - mb * math.sin(t), mz) for t in np.linspace(0.0, math.pi, 19)]
    prims += _polyline(arc, 6.0, H["mandible"], label=21, label_neg_x=22, scale=(1.0, 1.0, 2.0))
    for side, sgn in ((0, 1.0), (1, -1.0)):
        gonion = (sgn * ma, myc, mz)
        condyle = (sgn * (ma + 4.0), 0.0, -36.0)
        prims += _polyline([gonion, condyle], 4.0, H["mandible"], label=21, label_neg_x=22,
                           scale=(1.0, 3.0, 1.0))
        add(_Ellipsoid(hu=H["tmj"], label=18 + side, center=(sgn * (ma + 5.0), 2.0, -30.0),
                       semi=(7.0, 6.0, 6.0)))
    return prims


# --------------------------------------------------------------------------------------------
# rasterisation


@dataclass
class _Raster:
    shape_zyx: tuple[int, int, int]
    spacing: np.ndarray  # (x, y, z)
    origin: np.ndarray  # (x, y, z)
    A: np.ndarray  # canonical -> physical linear part (p = A q + t, before displacement)
    t: np.ndarray
    disp_max: float  # bound on |displacement| per axis, mm

    def index_box(self, lo: np.ndarray, hi: np.ndarray, margin_vox: int = 0
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """Voxel index box (x, y, z; [start, stop)) that may contain canonical points in [lo, hi]."""
        lo = np.asarray(lo, float) - self.disp_max
        hi = np.asarray(hi, float) + self.disp_max
        corners = np.array([[lo[0] if i & 1 else hi[0], lo[1] if i & 2 else hi[1],
                             lo[2] if i & 4 else hi[2]] for i in range(8)])
        phys = corners @ self.A.T + self.t
        idx = (phys - self.origin) / self.spacing
        start = np.floor(idx.min(axis=0)).astype(int) - margin_vox
        stop = np.ceil(idx.max(axis=0)).astype(int) + 1 + margin_vox
        nxyz = np.array(self.shape_zyx[::-1])
        start = np.clip(start, 0, nxyz)
        stop = np.clip(stop, 0, nxyz)
        if np.any(stop <= start):
            return None
        return start, stop


def _build_coords(r: _Raster, p: dict[str, Any], start: np.ndarray, stop: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical coordinates (float32, arrays (z, y, x)) of the voxel centres in the index box."""
    px = (r.origin[0] + r.spacing[0] * np.arange(start[0], stop[0])).astype(np.float64)
    py = (r.origin[1] + r.spacing[1] * np.arange(start[1], stop[1])).astype(np.float64)
    pz = (r.origin[2] + r.spacing[2] * np.arange(start[2], stop[2])).astype(np.float64)
    M = np.linalg.inv(r.A)
    shape = (len(pz), len(py), len(px))
    X = (px - r.t[0]).astype(np.float32)
    Y = (py - r.t[1]).astype(np.float32)
    Z = (pz - r.t[2]).astype(np.float32)
    tmp = np.empty(shape, np.float32)
    coords = []
    for i in range(3):
        q = np.empty(shape, np.float32)
        np.add((M[i, 0] * X)[None, None, :], (M[i, 1] * Y)[None, :, None], out=q)
        q += (M[i, 2] * Z)[:, None, None]
        for amp, k, phase in p["waves"][i]:
            # sin(kx x + phase + (ky y + kz z)) = sin(A) cos(B) + cos(A) sin(B), separable-ish
            a_ = k[0] * px + phase
            b_ = k[1] * py[None, :] + k[2] * pz[:, None]
            sa = (amp * np.sin(a_)).astype(np.float32)
            ca = (amp * np.cos(a_)).astype(np.float32)
            sb = np.sin(b_).astype(np.float32)
            cb = np.cos(b_).astype(np.float32)
            np.multiply(cb[:, :, None], sa[None, None, :], out=tmp)
            q += tmp
            np.multiply(sb[:, :, None], ca[None, None, :], out=tmp)
            q += tmp
        coords.append(q)
    return coords[0], coords[1], coords[2]


@dataclass
class PhantomArrays:
    """A generated case as NumPy arrays plus its geometry.

    ``ct`` (int16 HU) and ``labels`` (uint8) are indexed ``[z, y, x]``; ``shape`` and ``spacing`` (mm)
    and ``origin`` (mm, physical position of voxel (0, 0, 0)) are in (x, y, z) order; the direction
    is the identity. ``forced_labels`` lists organs that no voxel centre fell into and that were
    kept as a single voxel (nearest to the organ) so every label is present. It stays empty on
    the presets (checked for seeds 0-399 on "small"); very coarse explicit grids may need it.
    """

    seed: int
    size: str
    ct: np.ndarray
    labels: np.ndarray
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    forced_labels: tuple[int, ...]
    params: dict[str, Any]

    def to_images(self) -> tuple[sitk.Image, sitk.Image]:
        """Return ``(ct, labels)`` as SimpleITK images with identical geometry."""
        images = []
        for arr in (self.ct, self.labels):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(self.spacing)
            img.SetOrigin(self.origin)
            img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
            images.append(img)
        return images[0], images[1]


def generate_case_arrays(seed: int, size: str = "small") -> PhantomArrays:
    """Generate one phantom case as NumPy arrays (see :func:`generate_case` for the images).

    Parameters
    ----------
    seed:
        Non-negative integer; the case is a pure function of ``(seed, size)``.
    size:
        Preset name or ``"XxYxZ"``, see :func:`parse_size`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    shape, spacing = parse_size(size)
    rng = np.random.default_rng(int(seed))
    p = _draw_params(rng)
    prims = _anatomy(p)

    spacing_a = np.asarray(spacing, float)
    shape_a = np.asarray(shape, int)
    origin = -0.5 * (shape_a - 1) * spacing_a
    rot = _rot_xyz(*np.deg2rad(p["rotation_deg"]))
    A = rot @ np.diag(p["scale"])
    disp_max = max(sum(abs(w[0]) for w in comp) for comp in p["waves"])
    r = _Raster(shape_zyx=(shape[2], shape[1], shape[0]), spacing=spacing_a, origin=origin,
                A=A, t=np.asarray(p["translation_mm"], float), disp_max=disp_max)

    # region of interest: the body (first three primitives), plus a margin for the blur
    blur_sigma_vox = np.clip(1.0 / spacing_a, 0.35, 1.0)  # ~1 mm Gaussian blur, (x, y, z)
    margin = int(math.ceil(4.0 * blur_sigma_vox.max())) + 1
    lo = np.min([pr.bbox()[0] for pr in prims[:3]], axis=0)
    hi = np.max([pr.bbox()[1] for pr in prims[:3]], axis=0)
    box = r.index_box(lo, hi, margin_vox=margin)
    assert box is not None
    r_start, r_stop = box
    roi = (slice(r_start[2], r_stop[2]), slice(r_start[1], r_stop[1]), slice(r_start[0], r_stop[0]))
    qx, qy, qz = _build_coords(r, p, r_start, r_stop)

    hu = np.full(r.shape_zyx, _HU["air"], np.float32)
    lab = np.zeros(r.shape_zyx, np.uint8)
    hu_roi, lab_roi = hu[roi], lab[roi]
    # best (field value, flat index into the full volume, HU) per label, for the presence fallback
    best: dict[int, tuple[float, int, float]] = {}

    for prim in prims:
        b = r.index_box(*prim.bbox())
        if b is None:
            continue
        s0 = np.maximum(b[0], r_start) - r_start
        s1 = np.minimum(b[1], r_stop) - r_start
        if np.any(s1 <= s0):
            continue
        sl = (slice(s0[2], s1[2]), slice(s0[1], s1[1]), slice(s0[0], s1[0]))
        x, y, z = qx[sl], qy[sl], qz[sl]
        f = prim.field(x, y, z)
        inside = f <= 1.0
        hu_roi[sl][inside] = prim.hu
        lv = lab_roi[sl]
        if prim.label_neg_x is None:
            lv[inside] = prim.label
            parts = [(prim.label, f)] if prim.label else []
        else:
            pos = x >= 0
            lv[inside & pos] = prim.label
            lv[inside & ~pos] = prim.label_neg_x
            parts = [(prim.label, np.where(pos, f, _BIG)), (prim.label_neg_x, np.where(pos, _BIG, f))]
        for label, g in parts:
            k = int(np.argmin(g))
            v = float(g.flat[k])
            if label not in best or v < best[label][0]:
                iz, iy, ix = np.unravel_index(k, g.shape)
                flat = int(np.ravel_multi_index(
                    (iz + s0[2] + r_start[2], iy + s0[1] + r_start[1], ix + s0[0] + r_start[0]),
                    r.shape_zyx))
                best[label] = (v, flat, prim.hu)
    del qx, qy, qz

    counts = np.bincount(lab_roi.ravel(), minlength=len(HAN_OAR_22) + 1)
    forced = []
    for label in HAN_OAR_22:
        if counts[label] == 0 and label in best:
            _, flat, organ_hu = best[label]
            lab.flat[flat] = label
            hu.flat[flat] = organ_hu
            forced.append(label)

    # light blur (partial volume), then white noise sigma 10 HU
    hu_roi[...] = ndimage.gaussian_filter(hu_roi, sigma=tuple(blur_sigma_vox[::-1]), mode="nearest")
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise *= 10.0
    hu += noise
    del noise
    np.rint(hu, out=hu)
    np.clip(hu, -1024, 3071, out=hu)
    ct = hu.astype(np.int16)
    del hu

    return PhantomArrays(
        seed=int(seed), size=size, ct=ct, labels=lab, shape=tuple(int(v) for v in shape),
        spacing=tuple(float(v) for v in spacing), origin=tuple(float(v) for v in origin),
        forced_labels=tuple(forced), params=p,
    )


def generate_case(seed: int, size: str = "small") -> tuple[sitk.Image, sitk.Image]:
    """Generate a synthetic head-and-neck CT and its 22-organ label map.

    Parameters
    ----------
    seed:
        Non-negative integer. The same seed always gives identical images; different seeds give
        different anatomy (global scale 0.93-1.07 per axis, rotation up to +-5 deg, translation up
        to +-5 mm, a smooth 2-4 mm displacement field, and per-organ size/position jitter).
    size:
        ``"small"`` (96x96x40 voxels, 2.8x2.8x6 mm), ``"medium"`` (192x192x64, 1.4x1.4x3.75 mm),
        ``"realistic"`` (512x512x100, 1x1x3 mm) or an explicit ``"XxYxZ"`` (see :func:`parse_size`).

    Returns
    -------
    ``(ct, labels)``: ``ct`` is an int16 image in HU, ``labels`` a uint8 image with ids 0..22 from
    :data:`HAN_OAR_22`. Both have the same size, spacing (mm), origin (mm, grid centred on the
    physical origin, which is near the head centre) and identity direction; physical space is LPS.
    """
    return generate_case_arrays(seed, size).to_images()


def write_case(directory: str | Path, case_id: str, seed: int, size: str = "small") -> dict[str, Any]:
    """Generate a case and write ``<directory>/<case_id>/image.mha`` and ``reference.mha``.

    Both files are written with compression. Returns JSON-serialisable metadata: ``case_id``,
    ``seed``, ``size``, ``shape`` and ``spacing`` (x, y, z; voxels and mm), ``origin`` (mm),
    ``labels_present`` (sorted label ids with at least one voxel), ``forced_labels`` and the paths.
    """
    if not case_id or any(c in case_id for c in "/\\") or case_id in (".", ".."):
        raise ValueError(f"invalid case_id {case_id!r}: must be a plain directory name")
    case = generate_case_arrays(seed, size)
    ct, labels = case.to_images()
    out = Path(directory) / case_id
    out.mkdir(parents=True, exist_ok=True)
    image_path = out / "image.mha"
    reference_path = out / "reference.mha"
    sitk.WriteImage(ct, str(image_path), useCompression=True)
    sitk.WriteImage(labels, str(reference_path), useCompression=True)
    present = np.flatnonzero(np.bincount(case.labels.ravel(), minlength=len(HAN_OAR_22) + 1))
    return {
        "case_id": case_id,
        "seed": int(seed),
        "size": size,
        "shape": list(case.shape),
        "spacing": list(case.spacing),
        "origin": list(case.origin),
        "labels_present": [int(v) for v in present if v != 0],
        "forced_labels": list(case.forced_labels),
        "image": str(image_path),
        "reference": str(reference_path),
    }


# -- MICCAI 2015 / PDDCA subset (han-oar-9) -------------------------------------------------------
#: Label id -> organ name in PDDCA order (MICCAI 2015 Head and Neck Auto-segmentation Challenge).
HAN_OAR_9: dict[int, str] = {1: "BrainStem", 2: "Chiasm", 3: "Mandible", 4: "OpticNerve_L", 5: "OpticNerve_R",
                             6: "Parotid_L", 7: "Parotid_R", 8: "Submandibular_L", 9: "Submandibular_R"}
#: 22-organ phantom id -> PDDCA id (the two mandible halves become one mandible; the rest is dropped).
HAN22_TO_PDDCA: dict[int, int] = {1: 1, 8: 2, 21: 3, 22: 3, 6: 4, 7: 5, 12: 6, 13: 7}
SUBMANDIBULAR_HU = 45.0
SUBMANDIBULAR_RADII_MM = (14.0, 11.0, 12.0)


def pddca_missing_gland(seed: int) -> int | None:
    """The PDDCA id of the submandibular gland a case lacks (every 4th seed, like 4 of PDDCA's 16 cases), or None."""
    if int(seed) % 4 != 2:
        return None
    return 8 if (int(seed) // 4) % 2 == 0 else 9


def generate_case_9(seed: int, size: str = "small") -> tuple[np.ndarray, np.ndarray, PhantomArrays]:
    """The 22-organ phantom relabelled to the 9 PDDCA organs, plus submandibular glands (ellipsoids medial to
    and below the mandible body). A case from :func:`pddca_missing_gland` lacks one gland (resected: no gland
    tissue in the CT and no label). Returns ``(ct, labels, base)`` arrays (z, y, x)."""
    base = generate_case_arrays(seed, size)
    lut = np.zeros(256, np.uint8)
    for src, dst in HAN22_TO_PDDCA.items():
        lut[src] = dst
    labels = lut[base.labels]
    ct = base.ct.copy()
    missing = pddca_missing_gland(seed)
    rng = np.random.default_rng(int(seed) + 15013)
    sp, org = np.asarray(base.spacing), np.asarray(base.origin)
    zz, yy, xx = (np.arange(n) for n in base.labels.shape)
    for side_label, mand, sign in ((8, 21, 1.0), (9, 22, -1.0)):
        m = np.nonzero(base.labels == mand)
        if not m[0].size:
            continue
        x = org[0] + m[2] * sp[0]
        y = org[1] + m[1] * sp[1]
        z = org[2] + m[0] * sp[2]
        centre = np.array([0.62 * (x.max() if sign > 0 else x.min()), y.min() + 0.58 * (y.max() - y.min()),
                           z.min() + 10.0]) + rng.uniform(-2.0, 2.0, 3)
        radii = np.asarray(SUBMANDIBULAR_RADII_MM) * rng.uniform(0.9, 1.1, 3)
        dx = ((org[0] + xx * sp[0] - centre[0]) / radii[0]) ** 2
        dy = ((org[1] + yy * sp[1] - centre[1]) / radii[1]) ** 2
        dz = ((org[2] + zz * sp[2] - centre[2]) / radii[2]) ** 2
        gland = (dz[:, None, None] + dy[None, :, None] + dx[None, None, :]) <= 1.0
        gland &= (labels == 0) & (base.labels == 0) & (ct < 300)
        if side_label == missing:
            continue
        noise = rng.standard_normal(int(gland.sum())) * 10.0
        ct[gland] = np.clip(np.rint(SUBMANDIBULAR_HU + noise), -1024, 3071).astype(np.int16)
        labels[gland] = side_label
    return ct, labels, base


def write_case_9(directory: str | Path, case_id: str, seed: int, size: str = "small") -> dict[str, Any]:
    """Write a :func:`generate_case_9` case as ``<directory>/<case_id>/image.mha`` and ``reference.mha``."""
    if not case_id or any(c in case_id for c in "/\\") or case_id in (".", ".."):
        raise ValueError(f"invalid case_id {case_id!r}: must be a plain directory name")
    ct, labels, base = generate_case_9(seed, size)
    out = Path(directory) / case_id
    out.mkdir(parents=True, exist_ok=True)
    for arr, name in ((ct, "image.mha"), (labels, "reference.mha")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(base.spacing)
        img.SetOrigin(base.origin)
        sitk.WriteImage(img, str(out / name), useCompression=True)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=10))
    missing = pddca_missing_gland(seed)
    return {"case_id": case_id, "seed": int(seed), "size": size, "shape": list(base.shape),
            "spacing": list(base.spacing), "origin": list(base.origin),
            "labels_present": [int(v) for v in present if v],
            "missing_organs": [HAN_OAR_9[missing]] if missing else [],
            "image": str(out / "image.mha"), "reference": str(out / "reference.mha")}

"""Real case of abdomen-totalseg: the TotalSegmentator example CT in the shared data folder (read there,
never copied into the repository) with the normal model's segmentation as the reference.

``example_ct_sm.nii.gz`` is the CT on the segmentations' grid (122 × 101 × 30 voxels, 3 mm);
``example_ct.nii.gz`` is a longer scan (112 slices) of which the segmentations cover the first 30.
"""

from pathlib import Path

from arena.tasks.store import CaseSource

ATTRIBUTION = "TotalSegmentator test fixtures (Wasserthal et al.), Apache-2.0"


def cases(data_root: Path) -> list[CaseSource]:
    d = Path(data_root) / "totalseg"
    return [CaseSource(key="totalseg-example", image=d / "example_ct_sm.nii.gz", reference=d / "example_seg.nii.gz",
                       phase="test", meta={"source": "totalseg", "reference_model": "TotalSegmentator normal",
                                           "attribution": ATTRIBUTION})]

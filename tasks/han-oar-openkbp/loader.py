"""Real cases of han-oar-openkbp: the two OpenKBP CTs in the shared data folder (read there, never copied
into the repository) with their clinical 7-OAR label maps, as hidden test cases."""

from pathlib import Path

from arena.tasks.store import CaseSource

PATIENTS = ("pt_22", "pt_307")
ATTRIBUTION = "OpenKBP (Babier et al., Med Phys 2021), MIT; images from TCIA collections"


def cases(data_root: Path) -> list[CaseSource]:
    d = Path(data_root) / "openkbp"
    return [CaseSource(key=p.replace("_", "-"), image=d / f"{p}_ct.nii.gz", reference=d / f"{p}_oars.nii.gz",
                       phase="test", meta={"source": "openkbp", "patient": p, "attribution": ATTRIBUTION})
            for p in PATIENTS]

"""Reading a participant's output image: the header checks, and the program that reads it in a jail.

An output image is written by untrusted code and read on the worker's host. Some image formats can name
*another* file to read the voxels from: a MetaImage header's ``ElementDataFile = /abs/path``, a NRRD
header's ``data file:``, an ``.mhd``/``.hdr`` header beside its data file, a NIfTI ``ni1`` header.
Read naively, as root, such a header makes the worker score a file of its choice — the case's hidden
reference (Dice 1.0 on every organ) or any host file. Two layers stop that:

1. :func:`check_header` looks at the file's bytes before any image library does: the extension must be
   one of the task's formats, the magic bytes must match it, and a header may only describe data in the
   same file (MetaImage ``ElementDataFile = LOCAL``, NRRD without ``data file``, single-file NIfTI). It
   names the ITK ImageIO to use, so the reader never guesses the format from the content.
2. The voxels are read by this module run as a program (:func:`main`) inside a bubblewrap jail
   (``arena.runner.output_check.read_in_jail``): no network, its own PID/IPC namespaces, user nobody
   without capabilities, and a root filesystem holding only /usr, the Python installation, the one
   output file (read-only) and an empty folder for the array it writes. The next parser bug is contained:
   the case's reference and the store are not there to read.

This module imports only the standard library, numpy, SimpleITK, tifffile and Pillow: in the jail the
``arena`` package is not on the path.
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
from pathlib import Path

import numpy as np

HEADER_SCAN_BYTES = 64 * 1024  # a MetaImage/NRRD text header longer than this is refused

# extension (lower case) -> (format name, ITK ImageIO class)
VOLUME_FORMATS: dict[str, tuple[str, str]] = {
    ".mha": ("mha", "MetaImageIO"),
    ".nii.gz": ("nii.gz", "NiftiImageIO"),
    ".nii": ("nii", "NiftiImageIO"),
    ".nrrd": ("nrrd", "NrrdImageIO"),
    ".tif": ("tif", "TIFFImageIO"),
    ".tiff": ("tiff", "TIFFImageIO"),
    ".png": ("png", "PNGImageIO"),
}
# header files whose voxels always live in a second file: never accepted
DETACHED = (".mhd", ".raw", ".hdr", ".img", ".img.gz", ".nhdr")
DETACHED_HEADERS = (".mhd", ".hdr", ".nhdr")  # the headers among them


class HeaderError(ValueError):
    """The output's header is not acceptable; the message says why (in the participant's terms)."""


def extension(name: str) -> str:
    """The file's extension in lower case, ``.nii.gz`` / ``.img.gz`` as one."""
    low = name.lower()
    for double in (".nii.gz", ".img.gz"):
        if low.endswith(double):
            return double
    dot = low.rfind(".")
    return low[dot:] if dot > 0 else ""


def _text_header(head: bytes, name: str, what: str) -> list[tuple[str, str]]:
    """``key = value`` / ``key: value`` lines of a text header (MetaImage, NRRD) up to the data."""
    lines = []
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line.strip():
            if what == "NRRD":
                break  # a NRRD header ends at its first blank line
            continue
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            break  # binary data begins
        lines.append(text)
        if what == "MetaImage" and text.split("=", 1)[0].strip().lower() == "elementdatafile":
            break  # MetaIO stops reading the header here
    else:
        if len(head) >= HEADER_SCAN_BYTES:
            raise HeaderError(f"the output {name}: its {what} header is longer than {HEADER_SCAN_BYTES // 1024} KB")
    return [(k.strip().lower(), v.strip()) for k, sep, v in
            (ln.partition("=" if what == "MetaImage" else ":") for ln in lines) if sep]


def check_header(path: str | Path, formats: list[str] | tuple[str, ...] | None = None) -> str:
    """Check an output image's first bytes; return the ITK ImageIO class that must read it.

    ``formats``: the task's accepted formats (``["mha", "nii.gz", ...]``; None: every single-file volume
    format above). Raises :class:`HeaderError` when the extension is not accepted, a detached-header
    format is used, the magic bytes do not match the extension, or the header names a data file other
    than itself (MetaImage ``ElementDataFile`` other than ``LOCAL``, NRRD ``data file``/``datafile``,
    NIfTI ``ni1``/``ni2`` pairs). Edge cases: an empty or unreadable file is refused; a ``.nii.gz``
    that is not gzip is refused.
    """
    path = Path(path)
    name = path.name
    ext = extension(name)
    if ext in DETACHED:
        raise HeaderError(f"the output {name}: {ext} files keep their voxels in a second file, which Arena does not "
                          f"read; write one self-contained file (e.g. .mha with ElementDataFile = LOCAL)")
    if ext not in VOLUME_FORMATS:
        raise HeaderError(f"the output {name}: unknown image format {ext or '(no extension)'}")
    fmt, io = VOLUME_FORMATS[ext]
    allowed = list(formats) if formats else ["mha", "nii.gz", "nrrd", "tif", "tiff"]
    if fmt not in allowed:
        raise HeaderError(f"the output {name}: .{fmt} is not one of the task's output formats "
                          f"({', '.join('.' + f for f in allowed)})")
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SCAN_BYTES)
    except OSError as e:
        raise HeaderError(f"the output {name} could not be opened ({e.strerror})") from None
    if not head:
        raise HeaderError(f"the output {name} is not a readable image (an empty file)")
    if fmt == "mha":
        fields = _text_header(head, name, "MetaImage")
        keys = [k for k, _ in fields]
        if not fields or "ndims" not in keys:
            raise HeaderError(f"the output {name} is not a readable image (no MetaImage 'NDims = ...' header)")
        data = [v for k, v in fields if k == "elementdatafile"]
        if not data:
            raise HeaderError(f"the output {name}: its MetaImage header has no 'ElementDataFile = LOCAL' line")
        if data[0].lower() != "local":
            raise HeaderError(f"the output {name}: 'ElementDataFile = {data[0][:80]}' names another file; a "
                              "MetaImage output must keep its voxels in the same file (ElementDataFile = LOCAL)")
    elif fmt == "nrrd":
        if not head.startswith(b"NRRD000"):
            raise HeaderError(f"the output {name} is not a readable image (no NRRD000x magic)")
        for k, v in _text_header(head, name, "NRRD"):
            if k.replace(" ", "") == "datafile":
                raise HeaderError(f"the output {name}: 'data file: {v[:80]}' names another file; a NRRD output "
                                  "must be attached (voxels in the same file)")
    elif fmt in ("nii.gz", "nii"):
        raw = head
        if fmt == "nii.gz":
            if not head.startswith(b"\x1f\x8b"):
                raise HeaderError(f"the output {name} is not a readable image (.nii.gz but not gzip-compressed)")
            try:
                with gzip.open(path, "rb") as g:
                    raw = g.read(544)
            except (OSError, EOFError) as e:
                raise HeaderError(f"the output {name}: broken gzip stream ({e})") from None
        sizes = {struct.unpack("<i", raw[:4])[0], struct.unpack(">i", raw[:4])[0]} if len(raw) >= 4 else set()
        if 348 in sizes and len(raw) >= 348:
            if raw[344:348] != b"n+1\x00":
                raise HeaderError(f"the output {name}: NIfTI magic {raw[344:348]!r}: only single-file NIfTI (n+1) "
                                  "is read")
        elif 540 in sizes and len(raw) >= 540:
            if raw[4:8] != b"n+2\x00":
                raise HeaderError(f"the output {name}: NIfTI-2 magic {raw[4:8]!r}: only single-file NIfTI (n+2) "
                                  "is read")
        else:
            raise HeaderError(f"the output {name} is not a readable image (NIfTI header size is not 348 or 540)")
    elif fmt in ("tif", "tiff"):
        if head[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            raise HeaderError(f"the output {name} is not a readable image (no TIFF magic bytes)")
    elif fmt == "png":
        if not head.startswith(b"\x89PNG\r\n\x1a\n"):
            raise HeaderError(f"the output {name} is not a readable image (no PNG signature)")
    return io


# ------------------------------------------------------------------------------------------------------------
# the program run in the jail
# ------------------------------------------------------------------------------------------------------------

def _volume(path: Path, req: dict, out: Path) -> dict:
    """Read a volume's header and, when its voxel count, components and pixel type are acceptable, its voxels."""
    import SimpleITK as sitk

    io = check_header(path, req.get("formats"))
    reader = sitk.ImageFileReader()
    reader.SetImageIO(io)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        return {"error": f"the output {path.name} is not a readable image ({last[:200]})"}
    header = {"dimension": reader.GetDimension(), "size": list(reader.GetSize()),
              "spacing": list(reader.GetSpacing()), "origin": list(reader.GetOrigin()),
              "direction": list(reader.GetDirection()), "components": reader.GetNumberOfComponents(),
              "pixel": sitk.GetPixelIDValueAsString(reader.GetPixelID())}
    voxels = int(np.prod(header["size"])) if header["size"] else 0
    if voxels != int(req["voxels"]) or header["components"] != 1 or "integer" not in header["pixel"]:
        return {"header": header}  # the parent names the problem; the voxels are never inflated
    try:
        arr = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError as e:
        last = str(e).strip().splitlines()[-1] if str(e).strip() else "unreadable"
        return {"error": f"the output {path.name} could not be read ({last[:200]})"}
    np.save(out / "array.npy", arr, allow_pickle=False)
    return {"header": header, "array": True}


def _mask(path: Path, req: dict, out: Path) -> dict:
    """Read a 2-D tile mask (TIFF, PNG or .mha): its size and channels, then its pixels if the size fits."""
    width, height = int(req["width"]), int(req["height"])
    io = check_header(path, req.get("formats"))
    ext = extension(path.name)
    try:
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:  # the first page only: never an OME series of other files
                page = tf.pages[0]
                shape, samples = (int(page.imagelength), int(page.imagewidth)), int(page.samplesperpixel)
                read = page.asarray
        elif ext == ".png":
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = max(width * height, 1)  # a bomb is refused before decoding
            im = Image.open(path)
            shape, samples = (im.size[1], im.size[0]), len(im.getbands())

            def read():
                return np.asarray(im)
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetImageIO(io)
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = reader.GetSize()
            if len(size) == 3 and size[2] == 1:
                size = size[:2]
            if len(size) != 2:
                return {"error": f"the output mask {path.name} is {len(size)}-D: expected a 2-D image"}
            shape, samples = (size[1], size[0]), reader.GetNumberOfComponents()

            def read():
                return sitk.GetArrayFromImage(reader.Execute()).reshape(height, width)
        header = {"shape": list(shape), "samples": samples}
        if tuple(shape) != (height, width) or samples != 1:
            return {"header": header}
        arr = np.asarray(read())
    except Exception as e:  # noqa: BLE001 - any reader failure is the output's fault
        return {"error": f"the output mask {path.name} is not a readable image ({str(e)[:160]})"}
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    np.save(out / "array.npy", arr, allow_pickle=False)
    return {"header": header, "array": True}


def main(argv: list[str] | None = None) -> int:
    """``untrusted_reader.py REQUEST_JSON``: read ``request["path"]`` as ``request["mode"]`` (``volume`` or
    ``mask``), write ``array.npy`` into ``request["out"]``, print one JSON line: ``{"header": ..., "array":
    bool}`` or ``{"error": "..."}``. Exit 0 whenever it could answer."""
    req = json.loads((argv if argv is not None else sys.argv[1:])[0])
    path, out = Path(req["path"]), Path(req["out"])
    try:
        answer = _volume(path, req, out) if req["mode"] == "volume" else _mask(path, req, out)
    except HeaderError as e:
        answer = {"error": str(e)}
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

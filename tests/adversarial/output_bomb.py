# A tiny compressed MetaImage whose header claims a huge volume: the worker must not inflate it.
import os
import sys
import zlib

side = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
raw = side ** 3
comp = zlib.compressobj(9)
data = bytearray()
zeros = bytes(2**24)
left = raw
while left:
    n = min(left, len(zeros))
    data += comp.compress(zeros[:n])
    left -= n
data += comp.flush()
header = (f"ObjectType = Image\nNDims = 3\nDimSize = {side} {side} {side}\nElementSpacing = 1 1 1\n"
          f"Offset = 0 0 0\nElementType = MET_UCHAR\nCompressedData = True\nCompressedDataSize = {len(data)}\n"
          "ElementDataFile = LOCAL\n").encode()
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
with open("/output/images/oar-segmentation/output.mha", "wb") as f:
    f.write(header + bytes(data))
print(f"wrote {len(header) + len(data)} bytes claiming {raw / 2**30:.1f} GiB", flush=True)

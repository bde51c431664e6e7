# Many 64 KiB files until the disk says no (the error is not caught).
import os

os.makedirs("/output/images/oar-segmentation", exist_ok=True)
block = b"z" * 65536
i = 0
while True:
    with open(f"/output/images/oar-segmentation/part-{i:07d}.bin", "wb") as f:
        f.write(block)
    i += 1

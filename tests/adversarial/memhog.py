# Allocates and touches memory until something stops it: the heap, or tmpfs files under /tmp or
# /dev/shm (4 MiB each, so the per-file size ulimit is not what stops them).
import os
import sys

where = sys.argv[1] if len(sys.argv) > 1 else "heap"
chunk = b"\xa5" * (4 * 2**20)
if where == "heap":
    hoard = []
    while True:
        hoard.append(bytearray(chunk))
i = 0
while True:
    with open(os.path.join(where, f"hog-{i:05d}.bin"), "wb") as f:
        f.write(chunk)
    i += 1

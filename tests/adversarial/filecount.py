# A file-count bomb: empty files (no data, only inodes) and empty directories, then exit 0.
import os
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
os.makedirs("/output/images/oar-segmentation", exist_ok=True)
made = 0
try:
    for i in range(n):
        os.close(os.open(f"/output/f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
        made += 1
except OSError as e:
    print(f"stopped after {made} files: {e}", flush=True)
print(f"made {made} empty files", flush=True)

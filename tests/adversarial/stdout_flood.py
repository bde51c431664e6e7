# 200 MB to stdout as fast as possible (plus a little stderr), then exit 0 without an output.
import os
import sys

line = b"x" * 99 + b"\n"
block = line * 10486  # ~1 MiB
for _ in range(200):
    os.write(1, block)
sys.stderr.write("flood done\n")

# Trees built to hurt the collector: "deep" nests directories 6,000 levels (paths far past PATH_MAX,
# past Python's recursion limit); "wide" makes 30,000 empty directories (no bytes for a size cap).
import os
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "deep"
os.chdir("/output")
if mode == "wide":
    for i in range(30_000):
        os.mkdir(f"d{i:05d}")
    print("made 30000 directories", flush=True)
else:
    depth = 0
    try:
        for depth in range(1, 6001):
            os.mkdir("nest")
            os.chdir("nest")
    except OSError as e:
        print(f"stopped at depth {depth}: {e}", flush=True)
    with open("deep.mha", "w") as f:
        f.write("bottom")
    print(f"nested {depth} levels", flush=True)

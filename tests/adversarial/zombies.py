# A zombie storm: children exit at once and are never reaped, until fork is refused (uncaught).
import os

n = 0
while True:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    n += 1
    if n % 8 == 0:
        print(f"{n} zombies", flush=True)

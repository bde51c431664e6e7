# Double-forks a daemon that ignores SIGTERM and keeps writing to /output, then exits 0 at once.
import os
import signal
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while True:
            try:
                with open("/output/daemon.txt", "a") as f:
                    f.write("still here\n")
            except OSError:
                pass
            time.sleep(0.05)
    os._exit(0)
print("main process exits, the daemon stays", flush=True)

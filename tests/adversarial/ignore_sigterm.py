# Ignores every catchable termination signal, in itself and a child, and sleeps forever.
import os
import signal
import time

for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, signal.SIG_IGN)
os.fork()
print(f"pid {os.getpid()} ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)

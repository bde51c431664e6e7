# /adv/rootpy is a setuid-root copy of python3 made at build time. Does it give euid 0 (or any caps)?
import json
import os
import subprocess

probe = ("import os, json; st = {l.split(':')[0]: l.split(':')[1].strip() for l in open('/proc/self/status')}; "
         "print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), 'CapEff': st['CapEff'], "
         "'CapPrm': st['CapPrm'], 'NoNewPrivs': st['NoNewPrivs']}))")
out = {"self": {"uid": os.getuid(), "euid": os.geteuid()}}
st = os.stat("/adv/rootpy")
out["rootpy_mode"] = oct(st.st_mode)
out["rootpy_owner"] = st.st_uid
r = subprocess.run(["/adv/rootpy", "-c", probe], capture_output=True, text=True)
out["rootpy"] = json.loads(r.stdout) if r.returncode == 0 else r.stderr[-300:]
r = subprocess.run(["/adv/rootpy", "-c", "import os; os.setuid(0); print('became root')"], capture_output=True, text=True)
out["setuid0"] = (r.stdout + r.stderr).strip().splitlines()[-1][:200]
r = subprocess.run(["/adv/rootsh", "-p", "-c", "id -u; id -ru"], capture_output=True, text=True)
out["rootsh"] = (r.stdout + r.stderr).split()
print(json.dumps(out), flush=True)

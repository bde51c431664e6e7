"""Screenshots of the web pages on real data, for docs/screenshots/ (run by hand, not in CI).

What it does:

1. makes a throw-away ARENA_HOME (its own SQLite database, RQ queue name and run folder, so nothing of an
   existing installation or of a test run is touched) and runs ``arena demo --no-serve`` in it: the real
   OpenKBP validation patients of task han-oar-openkbp (read in place from the shared data folder, see
   ``arena.tasks.store.shared_data_root``), the example algorithm and the reference models, scored by a
   worker (about 2 minutes on 2 cores once the images exist; the first run builds them);
2. adds an administrator ``chair`` and gives the demo's participant ``demo`` a password;
3. starts ``arena serve`` on 127.0.0.1 (a free port) and, with Playwright driving Debian's Chromium at
   1280×800, saves:

   - ``leaderboard.png``: the validation board as a visitor without an account sees it;
   - ``compare.png``: the compare page for the two best entries;
   - ``entry.png``: the best entry's public summary (when the entry page exists);
   - ``submission.png``: the best reference model's submission page, as an organizer sees it;
   - ``viewer.png``: that model (A) against the second one (B) on the first validation case;
   - ``queue.png``: the organizer's queue;

4. stops the server and removes the throw-away home (``--keep`` leaves it and prints where).

Usage (Docker and Redis running, Playwright and Chromium installed, the shared data in place)::

    python scripts/screenshots.py                       # writes docs/screenshots/*.png
    python scripts/screenshots.py --out /tmp/shots --cases 6 --keep
    python scripts/screenshots.py --out /tmp/shots --reuse /tmp/arena-screenshots-XXXX   # pictures only

The other screenshots in docs/screenshots/ (signup, account, submit, manage-task) come from
tests/test_browser.py with ARENA_SCREENSHOTS=docs/screenshots (synthetic phantoms; those pages show no
case data). The images show real patients' CTs and clinical contours: OpenKBP (Babier et al., Med Phys
2021, MIT licence; images from TCIA head-and-neck collections), as docs/web.md says under the viewer's
screenshot.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PASSWORD = "screenshots only, thrown away"
TASK, PHASE = "han-oar-openkbp", "validation"
MAX_BYTES = 400_000  # a screenshot larger than this is refused (the README and docs load them all)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """Wait until ``url`` answers (any HTTP status); fail when ``proc`` exits or ``timeout_s`` pass."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"arena serve exited with code {proc.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"{url} did not answer within {timeout_s:.0f} s")


def setup_users(env: dict) -> dict:
    """The administrator ``chair``, a password for ``demo``; the ids of the board's two best reference
    entries (A, B) and the first validation case."""
    os.environ.update(env)
    from sqlalchemy import select

    from arena.config import load_settings
    from arena.db import session_scope
    from arena.leaderboard.query import leaderboard
    from arena.models import Task, User
    from arena.users import create_user, set_password

    settings = load_settings()
    with session_scope(settings.database_url) as s:
        if s.scalar(select(User).where(User.name == "chair")) is None:
            create_user(s, "chair", is_admin=True, password=PASSWORD)
        set_password(s.scalar(select(User).where(User.name == "demo")), PASSWORD)
        task = s.scalar(select(Task).where(Task.slug == TASK))
        phase = next(p for p in task.phases if p.slug == PHASE)
        table = leaderboard(s, task, phase).table
        ranked = table[table["rank"].notna() & table["submission_id"].notna()].sort_values("rank")
        subs = [int(x) for x in ranked["submission_id"].head(2)]
        if len(subs) < 2:
            sys.exit(f"the demo's {TASK}/{PHASE} board has {len(subs)} ranked entries; the pages need two")
        return {"a": subs[0], "b": subs[1], "case": phase.cases[0].key}


def shoot(base: str, ids: dict, out: Path) -> list[str]:
    """Save the pages (see the module docstring); the names written."""
    from playwright.sync_api import expect, sync_playwright

    written = []

    def save(page, name: str) -> None:
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        if path.stat().st_size > MAX_BYTES:
            sys.exit(f"{path}: {path.stat().st_size} bytes, over {MAX_BYTES}")
        written.append(path.name)
        log(f"{path} ({path.stat().st_size // 1000} KB)")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        visitor = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        visitor.set_default_timeout(60_000)
        visitor.goto(f"{base}/tasks/{TASK}?phase={PHASE}")
        expect(visitor.locator("#leaderboard")).to_be_visible()
        visitor.wait_for_load_state("networkidle")
        save(visitor, "leaderboard")
        visitor.goto(f"{base}/tasks/{TASK}/compare?phase={PHASE}&a={ids['a']}&b={ids['b']}")
        visitor.wait_for_load_state("networkidle")
        save(visitor, "compare")
        r = visitor.goto(f"{base}/tasks/{TASK}/entries/{ids['a']}?phase={PHASE}")
        if r is not None and r.status == 200:
            visitor.wait_for_load_state("networkidle")
            save(visitor, "entry")
        else:
            log(f"no entry page ({r.status if r else 'no answer'}): entry.png not taken")
        org = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        org.set_default_timeout(60_000)
        org.goto(f"{base}/signin")
        org.fill("#name", "chair")
        org.fill("#password", PASSWORD)
        org.click("button[type=submit]")
        org.wait_for_url(lambda u: "/signin" not in u)
        org.goto(f"{base}/submissions/{ids['a']}")
        expect(org.locator("#standing")).to_be_visible()
        save(org, "submission")
        org.goto(f"{base}/tasks/{TASK}/phases/{PHASE}/cases/{ids['case']}/view?a={ids['a']}&b={ids['b']}")
        img = org.locator("#vw-img")
        expect(img).to_have_attribute("data-shown", re.compile(r"^axial:\d+$"))  # the first slice is drawn
        org.wait_for_load_state("networkidle")  # scores and jump targets in; a jump draws another slice
        expect(img).to_have_attribute("data-shown", img.get_attribute("data-pending") or "")
        jump = org.locator("#vw-scores button:has-text('disagreement')").first  # model A's first organ
        if jump.count():
            before = img.get_attribute("data-shown")
            jump.click()
            expect(img).not_to_have_attribute("data-shown", before)
            expect(img).to_have_attribute("data-shown", img.get_attribute("data-pending") or "")
        save(org, "viewer")
        org.goto(f"{base}/manage/queue")
        save(org, "queue")
        browser.close()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="folder for the PNGs")
    ap.add_argument("--cases", type=int, default=4, help="validation patients in the demo (arena demo --cases)")
    ap.add_argument("--keep", action="store_true", help="keep the throw-away ARENA_HOME")
    ap.add_argument("--reuse", type=Path, metavar="HOME",
                    help="an ARENA_HOME kept by an earlier run (--keep): skip the demo, only take the pictures")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    if args.reuse and not (args.reuse / "arena.db").is_file():
        sys.exit(f"--reuse {args.reuse}: no arena.db there (a folder kept by --keep)")
    home = args.reuse.resolve() if args.reuse else Path(tempfile.mkdtemp(prefix="arena-screenshots-"))
    env = {**os.environ, "ARENA_HOME": str(home), "ARENA_DATABASE_URL": f"sqlite:///{home / 'arena.db'}",
           "ARENA_QUEUE": f"arena-screenshots-{uuid.uuid4().hex[:8]}", "ARENA_RUN_DIR": str(home / "runs")}
    server = None
    try:
        if not args.reuse:
            log(f"arena demo in {home} (log: {home / 'demo.log'})")
            with open(home / "demo.log", "wb") as f:
                rc = subprocess.call([sys.executable, "-m", "arena.cli", "demo", "--no-serve", "--cases",
                                      str(args.cases)], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
            if rc != 0:
                sys.exit(f"arena demo failed (exit {rc}); see {home / 'demo.log'}")
        ids = setup_users(env)
        port = free_port()
        log(f"arena serve on 127.0.0.1:{port}")
        server = subprocess.Popen([sys.executable, "-m", "arena.cli", "serve", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=open(home / "serve.log", "wb"),
                                  stderr=subprocess.STDOUT, cwd=REPO)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/", server)
        args.out.mkdir(parents=True, exist_ok=True)
        written = shoot(base, ids, args.out)
        log(f"wrote {', '.join(written)} to {args.out}")
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        if args.keep or args.reuse:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The ``arena`` client over HTTP: ``login``, and what ``submit`` (with an upload progress bar),
``status [ID] --watch`` and ``results ID --csv`` (arena.cli.submissions) do when a server is known.

Credentials (server URL and API token) live in ``$ARENA_CONFIG`` or ``~/.config/arena/credentials``
(JSON, mode 0600). ``arena submit`` uses HTTP when it has no ``--user`` (local mode) and a server is
known (``--server``, ``ARENA_SERVER`` or ``arena login``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from arena.cli.root import _fail, main
from arena.web.views import standing_text

FINISHED = ("succeeded", "failed", "cancelled")


def config_path() -> Path:
    return Path(os.environ.get("ARENA_CONFIG") or Path.home() / ".config" / "arena" / "credentials").expanduser()


def load_credentials() -> dict | None:
    try:
        data = json.loads(config_path().read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("server") and data.get("token") else None


def save_credentials(server: str, token: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"server": server.rstrip("/"), "token": token}, f)
    os.chmod(path, 0o600)
    return path


def client_settings(server: str | None = None) -> tuple[str, str] | None:
    """(server, token) when HTTP mode is configured, else None. ``--server`` / ARENA_SERVER override the file;
    ARENA_TOKEN overrides its token."""
    creds = load_credentials() or {}
    server = server or os.environ.get("ARENA_SERVER") or creds.get("server")
    token = os.environ.get("ARENA_TOKEN") or creds.get("token")
    if not server:
        return None
    if not token:
        _fail(f"no API token for {server}: run `arena login --server {server}`")
    return server.rstrip("/"), token


def _request(method: str, server: str, token: str, path: str, **kw):
    import requests

    try:
        r = requests.request(method, f"{server}/api/v1{path}", headers={"Authorization": f"Bearer {token}",
                                                                        **kw.pop("headers", {})},
                             timeout=kw.pop("timeout", 60), **kw)
    except requests.ConnectionError as e:
        _fail(f"cannot reach {server}: {e.__class__.__name__}")
    if r.status_code >= 400:
        try:
            msg = r.json().get("error", r.text)
        except ValueError:
            msg = r.text[:300]
        _fail(f"{r.status_code}: {msg}")
    return r


@main.command()
@click.option("--server", prompt="Arena server URL", help="e.g. https://arena.example.org")
@click.option("--token", prompt="API token (from your account page)", hide_input=True, help="a personal API token")
def login(server: str, token: str) -> None:
    """Store the server URL and your API token for the client commands."""
    server = server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        _fail("the server URL starts with http:// or https://")
    me = _request("GET", server, token, "/me").json()
    path = save_credentials(server, token)
    team = me["team"]["name"] if me.get("team") else "no team yet"
    click.echo(f"signed in to {server} as {me['name']} ({team}); credentials in {path}")


class _ProgressFile:
    """A file whose reads advance a progress bar; requests streams it (Content-Length from __len__)."""

    def __init__(self, path: Path, bar):
        self.f = open(path, "rb")
        self.size = path.stat().st_size
        self.bar = bar

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n if n and n > 0 else 1024 * 1024)
        self.bar.update(len(chunk))
        return chunk

    def close(self) -> None:
        self.f.close()


def submit_http(server: str, token: str, tarball: Path, task: str, phase: str, label: str | None,
                wait: bool, model: Path | None = None) -> None:
    """Upload the image (and first its model archive, when given) with progress bars; optionally follow it."""
    from tqdm import tqdm

    params = {"label": label or "", "filename": tarball.name}
    if model is not None:
        msize = model.stat().st_size
        with tqdm(total=msize, unit="B", unit_scale=True, unit_divisor=1024, desc=f"uploading {model.name}") as bar:
            body = _ProgressFile(model, bar)
            try:
                m = _request("POST", server, token, "/models", data=body, timeout=3600,
                             headers={"Content-Type": "application/octet-stream"}).json()
            finally:
                body.close()
        click.echo(f"model archive {model.name}: sha256 {m['sha256'][:12]}, {m['files']} files")
        params["model"] = m["sha256"]
    size = tarball.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"uploading {tarball.name}") as bar:
        body = _ProgressFile(tarball, bar)
        try:
            r = _request("POST", server, token, f"/tasks/{task}/phases/{phase}/submissions", data=body,
                         params=params, timeout=3600,
                         headers={"Content-Type": "application/octet-stream"})
        finally:
            body.close()
    sub = r.json()
    click.echo(f"submission {sub['id']} queued ({size / 1e6:.1f} MB, sha256 {sub['upload_sha256'][:12]}): {sub['url']}")
    if wait:
        watch(server, token, sub["id"])


def _show(sub: dict) -> None:
    click.echo(f"submission {sub['id']} ({sub['team']}, {sub['task']}/{sub['phase']}): {sub['status']}")
    if sub.get("error"):
        click.echo(f"  error: {sub['error']}")
    if sub.get("standing"):
        click.echo(f"  {standing_text(sub['standing'])}")
    for ev in sub["evaluations"]:
        click.echo(f"  evaluation {ev['id']}: {ev['status']} {ev['cases_done']}/{ev['cases_total']}"
                   + (f" — {ev['error']}" if ev.get("error") else ""))
        for c in ev.get("cases", []):
            dice = [v.get("dice") for v in c["scores"].values() if v.get("dice") is not None]
            mean = f"mean Dice {sum(dice) / len(dice):.3f}" if dice else ""
            mem = f"{c['peak_memory_mb']:.0f} MB" if c.get("peak_memory_mb") else ""
            click.echo(f"    {c['case']}: {c['status']} {c['runtime_s'] or 0:.1f}s {mem} {mean} {c['error'] or ''}")
        if ev.get("outcome") and ev["status"] == "failed":  # a phase that hides its cases: the outcome only
            click.echo(f"    {ev['outcome']}")
        if ev.get("duration_s") is not None:
            click.echo(f"    about {ev['duration_s']:g} s in all")
        for d in ev.get("diagnosis", []):
            click.echo(f"    {d['cases']} case(s): {d['outcome']}")


def watch(server: str, token: str, submission_id: int, interval: float = 2.0) -> dict:
    """Poll until the submission's latest evaluation finishes, with a case i/N bar."""
    from tqdm import tqdm

    bar = None
    while True:
        sub = _request("GET", server, token, f"/submissions/{submission_id}").json()
        ev = sub["evaluations"][-1] if sub["evaluations"] else None
        if ev and ev["cases_total"] and bar is None:
            bar = tqdm(total=ev["cases_total"], desc=f"submission {submission_id}", unit="case")
        if bar is not None and ev:
            bar.update(ev["cases_done"] - bar.n)
            bar.set_postfix_str(sub["status"])
        done = sub["intake_status"] == "failed" or (ev is not None and ev["status"] in FINISHED)
        if done:
            if bar is not None:
                bar.close()
            _show(sub)
            return sub
        time.sleep(interval)


def status_http(server: str, token: str, submission_id: int | None, follow: bool) -> None:
    if submission_id is None:
        page = _request("GET", server, token, "/submissions", params={"per_page": 20}).json()
        for s in page["items"]:
            click.echo(f"{s['id']:>6}  {s['task']}/{s['phase']:<12} {s['team']:<20} {s['status']:<24} {s['label'] or ''}")
        if not page["items"]:
            click.echo("no submissions yet")
        return
    if follow:
        watch(server, token, submission_id)
    else:
        _show(_request("GET", server, token, f"/submissions/{submission_id}").json())

"""``arena init``, ``arena worker``, ``arena serve``: the database schema and the long-running processes."""

from __future__ import annotations

import click

from arena.cli.root import main
from arena.config import load_settings


@main.command()
def init() -> None:
    """Create ARENA_HOME and create/upgrade the database schema."""
    from arena.db import upgrade

    settings = load_settings()
    settings.ensure_dirs()
    upgrade(settings.database_url)
    click.echo(f"database ready: {settings.database_url}")


@main.command()
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
@click.option("--gpu", "gpu", default=None, help="GPU device(s) this worker owns, e.g. 0 or 0,1: it then also "
              "takes GPU tasks (their own queue) and pins their containers to these devices")
def worker(burst: bool, gpu: str | None) -> None:
    """Run an RQ worker that takes intake and evaluation jobs (one worker per GPU in production)."""
    import logging

    from arena.runner.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_worker(load_settings(), burst=burst, gpu=gpu, say=click.echo)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=0, type=int, help="gunicorn worker processes (0: Flask's server)")
@click.option("--prod", is_flag=True, help="gunicorn with 2 × cores + 1 workers (production)")
def serve(host: str, port: int, workers: int, prod: bool) -> None:
    """Serve the web pages and the API."""
    from arena.db import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    if prod and not workers:
        import os as _os

        workers = 2 * (_os.cpu_count() or 1) + 1
    if workers:
        import os

        os.execvp("gunicorn", ["gunicorn", "-w", str(workers), "-b", f"{host}:{port}", "arena.web.wsgi:app"])
    from arena.web import create_app

    click.echo(f"Arena at http://{host}:{port}/")
    create_app(settings).run(host=host, port=port, threaded=True)

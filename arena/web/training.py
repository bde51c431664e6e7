"""The training-data download (a task's published training cases as one streamed tar), for the task page
and the API; the archive itself is :mod:`arena.tasks.training`."""

from __future__ import annotations

import os

from flask import Response, abort, current_app, stream_with_context

from arena.models import Task
from arena.tasks.store import spec_of
from arena.tasks.training import TrainingDataError, archive_files, archive_size, iter_archive, read_manifest


def training_summary(task: Task) -> dict | None:
    """``{"cases": N, "bytes": B}`` when the task publishes training data, else None (cheap: reads the
    manifest, no file)."""
    manifest = read_manifest(current_app.config["ARENA"], task.slug)
    if manifest is None:
        return None
    return {"cases": manifest["cases"], "bytes": sum(int(e["size"]) for e in manifest["files"]),
            "attribution": manifest.get("attribution", [])}


def training_response(task: Task) -> Response:
    """The archive as a streamed ``application/x-tar`` with its exact Content-Length; 404 when the task
    has none; 409 when a file is missing or changed size since the load (checked before the first byte)."""
    manifest = read_manifest(current_app.config["ARENA"], task.slug)
    if manifest is None:
        abort(404, description=f"task {task.slug!r} publishes no training data")
    for f in archive_files(manifest):
        try:
            size = os.stat(f.path).st_size
        except FileNotFoundError:
            size = -1
        if size != f.size:
            current_app.logger.error("training data of %s: %s missing or changed", task.slug, f.path)
            abort(409, description="the training data changed on the server since the task was loaded; "
                                   "the organizers must load the task again")
    labels = {k: v.name for k, v in spec_of(task).labels.items()}

    def chunks():
        try:
            yield from iter_archive(manifest, labels)
        except TrainingDataError as e:  # the stream breaks: the receiver sees a short archive
            current_app.logger.error("training data of %s: %s", task.slug, e)
            raise

    resp = Response(stream_with_context(chunks()), mimetype="application/x-tar")
    resp.headers["Content-Length"] = str(archive_size(manifest, labels))
    resp.headers["Content-Disposition"] = f'attachment; filename="{task.slug}-training.tar"'
    resp.headers["Cache-Control"] = "private, no-store"
    return resp

"""The clinician's case viewer (issue 16): CT slices with the reference's and one or two models' organ
contours, rendered server-side as PNG, and where to look (jump-to targets). Pure core: numpy, SimpleITK,
contourpy and Pillow; no Flask, no database. The web routes are in :mod:`arena.web.viewer`.

- :mod:`arena.viewer.render`: views, window presets, the organ palette, contours, PNG;
- :mod:`arena.viewer.volumes`: reading volumes and the bounded on-disk cache;
- :mod:`arena.viewer.jump`: largest-disagreement slices and the HD95 point;
- :mod:`arena.viewer.case`: one case's volumes and targets through the cache (what the routes call).
"""

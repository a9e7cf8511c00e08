"""Batches of photos: ``ofer-worker batch INPUT -o DIR [--engine local|ray]``.

- ``items``: what to reconstruct (a folder, a file list, a CSV / Parquet manifest) and each item's id;
- ``runner``: one warm reconstructor turning items into result folders (the ``local`` engine, and the work
  of every Ray actor);
- ``ray_engine``: the items through Ray Data on an actor pool (optional extra ``[ray]``);
- ``records``: ``item.json`` per item (resuming) and the summary table;
- ``command``: the batch as a whole.

The pipeline never knows where it runs; importing this package imports neither torch nor Ray.
"""

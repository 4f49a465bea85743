"""The integrity checker behind ``flocklog verify``: proves a log set lost, doubled and tore nothing.

It reads every file of a set (rotated and ``.gz`` archives included), finds the stamps that
:mod:`flocklog.stamps` writers put on each record and reports, per writer, gaps (lost), repeats (duplicated) and
a missing oldest prefix (expired, but only where the set's retention can explain it: otherwise lost); per line,
torn or corrupted records (plain text lines or JSON lines whose ``message`` holds the stamp); per timed archive,
records filed outside the interval its name claims and boundaries that were rotated more than once; per size set,
the rotation symptoms of unsafe multi-process rotation (archives far under ``maxBytes``, more rotations in one
second than the bytes written in it explain, more archives than the bytes explain, holes in the numbering).
Expected counts come from the caller, an ``--expect-file`` or a writers' ledger (:class:`flocklog.stamps.Ledger`).

Where each part lives: :mod:`._model` (options and report), :mod:`._scan` (reading a set, the one pass),
:mod:`._slots` (timed sets), :mod:`._size` (size sets), :mod:`._writers` (per-writer accounting and
retention), :mod:`._render` (the report for a person).
"""

from __future__ import annotations

from flocklog.verify._model import FileReport, Report, VerifyOptions, WriterReport, read_expect_file
from flocklog.verify._render import render_report
from flocklog.verify._scan import collect_files, verify_paths

__all__ = [
    "FileReport",
    "Report",
    "VerifyOptions",
    "WriterReport",
    "collect_files",
    "read_expect_file",
    "render_report",
    "verify_paths",
]

"""The ``kling-async`` command line: generate one video, or run a crash-safe batch.

``main`` is the console-script entry point (also ``python -m kling_async``). The modules,
each importing only those listed before it:

- ``_images`` (a URL or a local file), ``_errors`` (exit codes, :class:`CLIError`),
  ``_lock`` (one process per journal and per output folder), ``_journal`` (the SQLite
  journal and its states), ``_gate`` (fewer POSTs at once on "too many at once");
- ``_connection`` (key, URL and polling from options and environment; the session),
  ``_output`` (``--json`` or rich, writable folders; it loads ``_progress`` only when a
  live display is drawn), ``_batchfile`` (reading a JSONL file, every line checked by
  the library);
- ``_jobs`` (a batch's jobs, their states, planned from the journal), ``_failures`` (what
  a line's failure means), ``_batch`` (running a batch);
- ``_jsonlines`` (``--json`` output), ``_progress`` (the rich display, imported only when
  drawn), ``_parser`` (the options), ``_commands`` (generate/status/wait/download),
  ``_batchcmd`` (the batch command), ``_main`` (dispatch).
"""

from ._main import main

__all__ = ["main"]

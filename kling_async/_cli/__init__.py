"""The ``kling-async`` command line: generate one video, or run a crash-safe batch.

``main`` is the console-script entry point (also ``python -m kling_async``). The modules:
``_main`` (dispatch, errors), ``_parser`` (the options), ``_options`` (what they mean:
key, polling, emulator, exit codes), ``_commands`` (generate/status/wait/download),
``_batchcmd`` (the batch command), ``_batchfile`` (reading and validating a JSONL file),
``_journal`` (the SQLite journal), ``_lock`` (one process per journal and per output
folder), ``_batch`` (running a batch), ``_progress`` (the rich display, imported only when
drawn) and ``_jsonlines`` (``--json`` output).
"""

from ._main import main

__all__ = ["main"]

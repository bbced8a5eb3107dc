"""What the tests share, one module per kind of helper (``from support.cli import ...``).

Emulators and sessions come from the SDK's own kit, ``kling_async.testing`` (as users get
them): ``Emulator`` in-process, ``EmulatorProcess`` in a child process, ``session_for``
for a session on either (or on any URL). These modules add what only this suite needs:

- ``sessions``: ``fast_session``, the suite's ``session_for`` (a 2 s request timeout),
  and ``stray_tasks``, the asyncio tasks a test left running;
- ``loop``: an event loop in a thread, for synchronous tests that drive async things;
- ``cli``: the command as a real subprocess, an ``EmulatorProcess`` it talks to, and
  readers for its JSON lines and journal;
- ``batch``: a batch run in-process and a display that records it;
- ``scripted``: the scripted transport (the documented seam for tests without a server);
- ``emulator_http``: bare HTTP requests to an in-process emulator, and its command run
  as a child process to read what it prints;
- ``uvicorn``: the example service under a real uvicorn in a child process;
- ``redis_server``, ``redis_proxy``, ``redis_worker``, ``fastapi_worker_app``: a real
  redis-server, a proxy that makes it sick, the multi-process workers, the example as
  ``uvicorn --workers`` serves it.

The fixtures built on them are in ``tests/conftest.py``.
"""

"""Where tests/test_poller.py finds the scripted transport: it lives in support.scripted.

(Kept while the poller's tests are rewritten elsewhere; new tests import support.scripted.)
"""

from support.scripted import ScriptedTransport, scripted_session, status_body, task_of

__all__ = ["ScriptedTransport", "scripted_session", "status_body", "task_of"]

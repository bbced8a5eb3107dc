"""The public surface: one import path, nothing private leaking into the namespace."""

from __future__ import annotations

import kling_async


def test_every_public_name_reports_the_public_module():
    """Reprs, tracebacks and docs show kling_async.X, not a private module's path."""
    for name in kling_async.__all__:
        value = getattr(kling_async, name)
        if isinstance(value, type):
            assert value.__module__ == "kling_async", name


def test_the_namespace_holds_only_what_is_exported():
    """No helper (version, PackageNotFoundError, loop variables) leaks into the package."""
    public = {name for name in vars(kling_async) if not name.startswith("_")}
    assert public <= set(kling_async.__all__) | {"emulator", "testing"}
    assert "version" not in public and "PackageNotFoundError" not in public


async def test_a_session_hands_out_exported_types():
    """What a session returns for inspection is an exported type."""
    async with kling_async.KlingSession(
        api_key="sk-public-test", base_url="http://127.0.0.1:9"
    ) as session:
        stats = session.poll_stats()
    assert type(stats) is kling_async.PollStats
    assert repr(stats).startswith("PollStats(tasks=0")

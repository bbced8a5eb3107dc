"""The README stays true: CI runs its test command, and it names every public error."""

from __future__ import annotations

from pathlib import Path

import kling_async

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    """The last command of .ci/run appears verbatim in the README."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert lines[-1] in README


def test_readme_names_every_public_error():
    """Each exported KlingError subclass appears in the README's error tree."""
    errors = [
        name
        for name in kling_async.__all__
        if isinstance(getattr(kling_async, name), type)
        and issubclass(getattr(kling_async, name), kling_async.KlingError)
    ]
    assert len(errors) > 15
    assert [name for name in errors if name not in README] == []

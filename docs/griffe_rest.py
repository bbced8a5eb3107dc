"""A Griffe extension that reads the package's reST-flavoured docstrings as Markdown.

The docstrings use two bits of reStructuredText that Markdown does not know:

* roles such as ``:class:`~kling_async.KlingSession``` or ``:meth:`close```, which become
  cross-references (``[`KlingSession`][kling_async.KlingSession]``), the name resolved
  in the docstring's own scope; a name that resolves to nothing rendered stays a
  reference, so ``mkdocs build --strict`` fails on it instead of printing a dead name;
* a paragraph ending in ``::`` to introduce an indented example, which keeps one colon.

mkdocs.yml loads it as ``docs/griffe_rest.py``; ``exclude_docs`` keeps it off the site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|obj|mod):`(~?)([\w.]+)`")
LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)


def target(obj: griffe.Object, name: str) -> str:
    """The full path ``name`` stands for in ``obj``'s docstring (``name`` if none)."""
    if name.startswith("kling_async"):
        return name
    first, _, rest = name.partition(".")
    try:
        resolved = obj.resolve(first)
    except griffe.NameResolutionError:
        return name
    return f"{resolved}.{rest}" if rest else resolved


def markdown(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with its roles and literal intros as Markdown."""

    def link(match: re.Match[str]) -> str:
        short, name = match[1], match[2]
        shown = name.rsplit(".", 1)[-1] if short else name
        return f"[`{shown}`][{target(obj, name)}]"

    return LITERAL_INTRO.sub(r"\1:", ROLE.sub(link, text))


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring once the whole package is loaded (so names resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of ``pkg`` and of everything in it."""
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)

"""The documentation site (mkdocs.yml, docs/): every public name documented and rendered.

``mkdocs build --strict`` (in the README's test command) fails on a broken link, anchor or
cross-reference; it does not fail on a missing docstring or on a public name no page
renders, which these tests catch. They read the package the way the site does (Griffe,
with the site's extensions), so what passes here is what the reference shows.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import griffe
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODULES = ("kling_async", "kling_async.testing", "kling_async.emulator")
"""The public modules: the reference documents everything their ``__all__`` lists."""
DIRECTIVE = re.compile(r"^::: ([\w.]+)\n((?:[ \t]+.*\n)*)", re.MULTILINE)


def mkdocs_config() -> dict[str, Any]:
    """mkdocs.yml, parsed."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return config


def python_handler() -> dict[str, Any]:
    """The mkdocstrings Python handler's settings in mkdocs.yml."""
    for plugin in mkdocs_config()["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            handler: dict[str, Any] = plugin["mkdocstrings"]["handlers"]["python"]
            return handler
    raise AssertionError("mkdocs.yml has no mkdocstrings plugin")


def extension_path(name: str) -> str:
    """An extension as mkdocs.yml names it, a file's path made absolute (it is relative to
    the repository root, where mkdocs runs)."""
    return str(ROOT / name) if name.endswith(".py") else name


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    """kling_async as the site's reference loads it, with the site's Griffe extensions."""
    names = python_handler()["options"]["extensions"]
    extensions = griffe.load_extensions(*map(extension_path, names))
    return griffe.load("kling_async", search_paths=[str(ROOT)], extensions=extensions)


@pytest.fixture(scope="module")
def rest() -> ModuleType:
    """docs/griffe_rest.py, the site's reST-to-Markdown extension, as a module."""
    spec = importlib.util.spec_from_file_location("griffe_rest", DOCS / "griffe_rest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def target(obj: griffe.Object | griffe.Alias) -> griffe.Object | griffe.Alias:
    """What ``obj`` stands for: the object itself, or the one an import (alias) names."""
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def public_names(package: griffe.Module) -> list[tuple[str, griffe.Object | griffe.Alias]]:
    """(full name, object) of every name the public modules export, dunders aside."""
    found = []
    for module_name in MODULES:
        _, _, inner = module_name.partition(".")
        module = package[inner] if inner else package
        assert module.exports, module_name
        for name in module.exports:
            if not name.startswith("__"):
                found.append((f"{module_name}.{name}", target(module[name])))
    return found


def documented(obj: griffe.Object | griffe.Alias) -> bool:
    """True if ``obj`` has a docstring with words in it."""
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def test_every_public_name_has_a_docstring(package: griffe.Module) -> None:
    """Each exported name, and each public method and property of an exported class, says
    what it is: mkdocstrings would render it as a bare signature."""
    names = public_names(package)
    assert len(names) > 60, names
    missing = []
    for name, obj in names:
        if not documented(obj):
            missing.append(name)
        if obj.is_class:
            for member_name, member in obj.members.items():
                real = target(member)
                callable_ = real.is_function or "property" in real.labels
                if not member_name.startswith("_") and callable_ and not documented(real):
                    missing.append(f"{name}.{member_name}")
    assert missing == []


def reference_directives() -> dict[str, dict[str, Any]]:
    """Each ``::: identifier`` of the reference pages, with its options."""
    found: dict[str, dict[str, Any]] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            block = yaml.safe_load(textwrap.dedent(match[2])) if match[2].strip() else None
            assert match[1] not in found, f"{match[1]} is rendered twice ({page.name})"
            found[match[1]] = (block or {}).get("options", {})
    return found


def test_the_reference_renders_every_public_name(package: griffe.Module) -> None:
    """Each exported name is on a reference page: by its own ``:::`` directive, or as a
    member of a module rendered whole; a new public name fails here until it has a place."""
    directives = reference_directives()
    whole = {name for name, options in directives.items() if options.get("members", True)}
    missing = [
        name
        for name, _ in public_names(package)
        if name not in directives and name.rsplit(".", 1)[0] not in whole
    ]
    assert missing == [], "add them to a page of docs/reference/"
    assert "kling_async" in directives and "kling_async" not in whole  # the index: no members


def test_the_build_fetches_nothing() -> None:
    """No web fonts, CDN scripts or remote inventories: the site builds and reads offline."""
    config = mkdocs_config()
    assert config["theme"]["font"] is False
    remote = [
        item
        for key in ("extra_css", "extra_javascript")
        for item in config.get(key, [])
        if re.match(r"(https?:)?//", str(item))
    ]
    assert remote == []
    plugins = {next(iter(p)) if isinstance(p, dict) else p for p in config["plugins"]}
    assert plugins.isdisjoint({"privacy", "social", "optimize"}), plugins  # they download
    assert "inventories" not in python_handler()
    for page in DOCS.rglob("*.md"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"!\[[^\]]*\]\(https?:|<(img|script)[^>]+src=\"https?:", text), page


def test_strict_build_checks_links_and_anchors() -> None:
    """mkdocs.yml fails the build (strict) on links to missing pages or anchors."""
    config = mkdocs_config()
    assert config["strict"] is True
    validation = config["validation"]
    assert {validation[key] for key in ("omitted_files", "unrecognized_links", "anchors")} == {
        "warn"
    }


def test_the_changelog_page_includes_the_changelog() -> None:
    """docs/changelog.md includes CHANGELOG.md (pymdownx.snippets) instead of a copy."""
    assert (DOCS / "changelog.md").read_text(encoding="utf-8").strip() == '--8<-- "CHANGELOG.md"'


# -- docs/griffe_rest.py: reST roles in docstrings become Markdown cross-references --------


def test_roles_become_references_resolved_in_scope(
    package: griffe.Module, rest: ModuleType
) -> None:
    """``:class:`X``` names X as seen from the docstring's object; ``~`` shows the last part."""
    markdown = rest.markdown

    testing = package["testing"]
    text = (
        ":func:`fast_config` and :class:`~kling_async.emulator.Emulator`, "
        ":meth:`EmulatorConfig.realistic`"
    )
    assert markdown(testing, text) == (
        "[`fast_config`][kling_async.testing.fast_config] and "
        "[`Emulator`][kling_async.emulator.Emulator], "
        "[`EmulatorConfig.realistic`][kling_async.emulator.EmulatorConfig.realistic]"
    )
    session = target(package["KlingSession"])
    assert markdown(session["submit"], ":meth:`close`") == (
        "[`close`][kling_async._session.KlingSession.close]"
    )


def test_an_unknown_role_target_stays_a_reference(package: griffe.Module, rest: ModuleType) -> None:
    """A name that resolves to nothing stays a reference, so the strict build reports it."""
    assert rest.markdown(package, ":class:`NoSuchThing`") == "[`NoSuchThing`][NoSuchThing]"


def test_a_literal_block_intro_keeps_one_colon(package: griffe.Module, rest: ModuleType) -> None:
    """reST's ``text::`` before an indented example reads as ``text:`` in Markdown."""
    text = "Load the plugin::\n\n    pytest_plugins = ['x']\n"
    assert rest.markdown(package, text) == "Load the plugin:\n\n    pytest_plugins = ['x']\n"

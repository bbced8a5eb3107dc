"""The README and the documentation site stay true: their commands and every Python block
run as written.

Each ```python block of README.md and of every page under docs/ is run by the kind of
program it is, found from its text, so a block added later (on any page) is run without
touching this file:

- a block whose first line names a file (``# conftest.py``, ``# test_videos.py``; also
  ```toml blocks such as ``# pyproject.toml``) is a file of one small pytest project, one
  project per page, which must pass under ``pytest -W error``;
- a block that defines a FastAPI ``app`` is imported and served in-process;
- any other block is a program: it runs as ``python block.py`` in an empty folder, with
  ``APIMART_API_KEY`` / ``APIMART_BASE_URL`` pointing at a fast emulator.

Every test is named by the page and line of its block (``docs/quickstart.md:30``). A block
found verbatim on several pages (a guide repeating the README) runs once, named by all
of them (``README.md:56+docs/quickstart.md:30``). Fences must start at the beginning of a
line with a language this file knows, so no Python block can hide from it (indented in an
admonition, or fenced as ```py).
"""

from __future__ import annotations

import asyncio
import os
import re
import runpy
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

import kling_async
from kling_async.emulator import Emulator
from kling_async.testing import TEST_API_KEY, slow_prompt

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
"""Every page whose blocks run: the README and the documentation site's."""
TESTS = Path(__file__).resolve().parent
FENCE_LANGUAGES = {"python", "toml", "sh", "text", ""}
"""What a fence may be: run (python, toml), or shown (sh, text, and a bare fence)."""

PROGRAM_TIMEOUT = 120.0  # real seconds; a README program takes a few on an idle machine
# What Python prints when a program misbehaves without failing: a warning (shown with
# -W default), an unclosed aiohttp session or connector, an error in a __del__.
NOISE = re.compile(r"Warning\b|Exception ignored|Unclosed|Traceback")


class Block(NamedTuple):
    """One fenced code block of a page."""

    page: str  # the page's path from the repository root, e.g. "docs/quickstart.md"
    language: str
    line: int  # line number of its opening fence
    code: str

    @property
    def where(self) -> str:
        """``page:line``, the block's name in test ids and messages."""
        return f"{self.page}:{self.line}"

    @property
    def filename(self) -> str | None:
        """The file the block is, when its first line is a comment naming one."""
        match = re.fullmatch(r"# ([\w.-]+\.(?:py|toml))", self.code.split("\n", 1)[0])
        return match[1] if match else None

    @property
    def kind(self) -> str:
        """How the block is run: a project file, a FastAPI app, or a program."""
        if self.filename:
            return "project"
        if re.search(r"^app = FastAPI\(", self.code, re.MULTILINE):
            return "app"
        return "program"


def page_name(page: Path) -> str:
    """A page's path from the repository root, with forward slashes."""
    return page.relative_to(ROOT).as_posix()


def page_blocks(page: Path, language: str) -> list[Block]:
    """The page's fenced blocks in ``language``, in order."""
    text = page.read_text(encoding="utf-8")
    return [
        Block(page_name(page), language, text.count("\n", 0, match.start()) + 1, match[1])
        for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    ]


def readme_blocks(language: str) -> list[Block]:
    """The README's fenced blocks in ``language``, in order."""
    return page_blocks(ROOT / "README.md", language)


def once_each(blocks: Iterable[Block]) -> list[list[Block]]:
    """``blocks`` grouped by their code: each distinct block once, with every place it is."""
    groups: dict[str, list[Block]] = {}
    for block in blocks:
        groups.setdefault(block.code, []).append(block)
    return list(groups.values())


def blocks_of_kind(kind: str) -> list[Any]:
    """Every page's distinct Python blocks of ``kind``, as pytest params named by place."""
    blocks = [b for page in PAGES for b in page_blocks(page, "python") if b.kind == kind]
    return [
        pytest.param(group[0], id="+".join(b.where for b in group)) for group in once_each(blocks)
    ]


def projects() -> list[Any]:
    """Each page's project files (named blocks), one param per distinct project."""
    found: dict[tuple[tuple[str | None, str], ...], list[list[Block]]] = {}
    for page in PAGES:
        files = [b for b in page_blocks(page, "python") + page_blocks(page, "toml") if b.filename]
        if files:
            found.setdefault(tuple((b.filename, b.code) for b in files), []).append(files)
    return [
        pytest.param(same[0], id="+".join(files[0].page for files in same))
        for same in found.values()
    ]


def emulator_env(emulator: Emulator) -> dict[str, str]:
    """This process's environment, with the SDK pointed at ``emulator``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIMART_")}
    env.update(APIMART_API_KEY=TEST_API_KEY, APIMART_BASE_URL=emulator.url)
    return env


async def run_program(path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``python -W default path`` in its folder, without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "default",
        path.name,
        cwd=path.parent,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PROGRAM_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{path.name} did not finish within {PROGRAM_TIMEOUT} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def not_videos(folder: Path) -> list[Path]:
    """Files named ``*.mp4`` under ``folder`` that are not MP4 videos."""
    return [path for path in folder.rglob("*.mp4") if path.read_bytes()[4:8] != b"ftyp"]


def test_ci_runs_the_readme_test_command():
    """The last command of .ci/run appears verbatim in the README."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert lines[-1] in README


@pytest.mark.parametrize("page", ["README.md", "docs/guides/errors.md"])
def test_page_names_every_public_error(page: str):
    """Each exported KlingError subclass appears in the page's error tree."""
    text = (ROOT / page).read_text(encoding="utf-8")
    errors = [
        name
        for name in kling_async.__all__
        if isinstance(getattr(kling_async, name), type)
        and issubclass(getattr(kling_async, name), kling_async.KlingError)
    ]
    assert len(errors) > 15
    assert [name for name in errors if name not in text] == []


def first_commands() -> list[Any]:
    """The one command that runs a generation, first on the README and the site's home."""
    blocks = [page_blocks(ROOT / page, "sh")[0] for page in ("README.md", "docs/index.md")]
    return [
        pytest.param(group[0], id="+".join(b.where for b in group)) for group in once_each(blocks)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("block", first_commands())
def test_first_command_saves_a_video(block: Block, tmp_path: Path) -> None:
    """The set-up's ``kling-async generate ... --emulator --out cat.mp4`` saves an MP4."""
    install, generate = block.code.strip().split(" && ")
    assert install.startswith("python3 -m pip install ")
    argv = shlex.split(generate)
    assert argv[0] == "kling-async" and "--emulator" in argv
    script = Path(sysconfig.get_path("scripts")) / "kling-async"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kling_async"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIMART_")}
    result = subprocess.run(
        command + argv[1:],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / argv[argv.index("--out") + 1]
    assert out.read_bytes()[4:8] == b"ftyp"


def test_install_lines_work_from_a_clone() -> None:
    """Every pip line installs kling_async from a path (it is on no index), with real extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = set(project["optional-dependencies"])
    example = ROOT / "examples" / "fastapi_app"
    # (the folder the line is run in, what it installs): the docs' commands run in the
    # clone's root, requirements.txt in its own folder.
    targets = [
        (ROOT, target)
        for doc in [*PAGES, example / "README.md"]
        for line in re.findall(r"pip install ([^`&#\n]+)", doc.read_text(encoding="utf-8"))
        for target in shlex.split(line)
        if not target.startswith("-")
    ]
    for line in (example / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            targets.append((example, shlex.split(line)[-1]))
    assert [t for _, t in targets if re.match(r"kling[-_]async", t, re.IGNORECASE)] == []
    paths = [(folder, t) for folder, t in targets if t.startswith(".")]
    assert len(paths) >= 5, targets
    for folder, target in paths:
        path, _, rest = target.partition("[")
        assert (folder / path).resolve() == ROOT, target
        assert {extra for extra in rest.rstrip("]").split(",") if extra} <= extras, target


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_fences_are_ones_this_file_finds(page: Path) -> None:
    """Every fence opens at the start of a line with a known language, so the blocks this
    file runs are all there are: none indented (in an admonition, a list) or fenced ```py."""
    opened: str | None = None  # the fence that opened the block we are in
    wrong = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = re.match(r"(\s*)(```+|~~~+)\s*(.*)$", line)
        if match is None:
            continue
        indent, fence, info = match.groups()
        if opened is not None:
            if fence.startswith(opened) and not info:
                opened = None
            continue
        opened = fence
        if indent or fence != "```" or info not in FENCE_LANGUAGES:
            wrong.append(f"{page_name(page)}:{number}: {line.strip()}")
    assert opened is None, f"{page_name(page)}: a fence is never closed"
    assert wrong == []


def test_every_page_is_searched() -> None:
    """The docs' pages are found, and their Python blocks are of the kinds run here."""
    names = [page_name(page) for page in PAGES]
    assert "docs/index.md" in names and "docs/quickstart.md" in names, names
    blocks = [b for page in PAGES[1:] for b in page_blocks(page, "python")]
    assert {b.kind for b in blocks} == {"program", "app", "project"}, blocks


@pytest.mark.slow
@pytest.mark.parametrize("block", blocks_of_kind("program"))
async def test_program_runs(block: Block, kling_emulator: Emulator, tmp_path: Path):
    """A page's program exits 0 against the emulator, quietly, and saves only real MP4s."""
    program = tmp_path / f"{Path(block.page).stem}_line_{block.line}.py"
    program.write_text(block.code, encoding="utf-8")
    code, out, err = await run_program(program, emulator_env(kling_emulator))
    assert code == 0, f"{block.where}\nstdout:\n{out}\nstderr:\n{err}"
    assert not NOISE.search(err), f"{block.where}\n{err}"
    assert not_videos(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("block", blocks_of_kind("app"))
async def test_app_serves_videos(
    block: Block, kling_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A page's FastAPI app answers 202 with an id, then the URL, or 202 while running."""
    for name, value in emulator_env(kling_emulator).items():
        monkeypatch.setenv(name, value)
    module = tmp_path / f"{Path(block.page).stem}_line_{block.line}.py"
    module.write_text(block.code, encoding="utf-8")
    app = runpy.run_path(str(module), run_name="docs_app")["app"]
    slow_prompt(kling_emulator, "slowly", factor=1000)  # a 0.1 s job takes 100 s
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as client,
    ):
        submitted = await client.post("/videos", json={"prompt": "a golden cat"})
        assert submitted.status_code == 202, submitted.text
        done = await client.get(f"/videos/{submitted.json()['id']}/result?timeout=60")
        assert done.status_code == 200, done.text
        assert done.json()["url"].startswith(kling_emulator.storage_url)

        slow = await client.post("/videos", json={"prompt": "a cat, slowly"})
        assert slow.status_code == 202, slow.text
        running = await client.get(f"/videos/{slow.json()['id']}/result?timeout=0.1")
        assert running.status_code == 202, running.text
        assert running.json()["status"] in {"pending", "processing"}
    assert kling_emulator.stats.submissions == 2


@pytest.mark.slow
@pytest.mark.parametrize("files", projects())
def test_testing_example_passes_verbatim(files: list[Block], pytester: pytest.Pytester) -> None:
    """A page's conftest, pyproject and test files make a project passing -W error."""
    names = [b.filename for b in files]
    assert "conftest.py" in names and "pyproject.toml" in names, names
    tests = 0
    for block in files:
        assert block.filename is not None
        (pytester.path / block.filename).write_text(block.code, encoding="utf-8")
        tests += len(re.findall(r"^(?:async )?def test_", block.code, re.MULTILINE))
    assert tests > 0
    result = pytester.runpytest_subprocess("-W", "error", timeout=PROGRAM_TIMEOUT)
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=tests, warnings=0)


@pytest.mark.slow
def test_hypothesis_settings_do_not_depend_on_ci() -> None:
    """The suite's Hypothesis settings are the same with and without $CI set."""
    from hypothesis._settings import _CI_VARS  # the variables that make Hypothesis say "CI"

    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import conftest; "
        "from hypothesis._settings import is_in_ci, settings; print(is_in_ci(), settings())"
    )
    local = {k: v for k, v in os.environ.items() if k not in _CI_VARS}
    seen = [
        subprocess.run(
            [sys.executable, "-c", probe, str(TESTS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROGRAM_TIMEOUT,
            check=True,
        ).stdout.split(" ", 1)
        for env in (local, {**local, "CI": "true"})
    ]
    assert [in_ci for in_ci, _ in seen] == ["False", "True"]
    assert seen[0][1] == seen[1][1]
    assert "derandomize=True" in seen[0][1] and "deadline=None" in seen[0][1]

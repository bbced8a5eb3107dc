"""The example's page (GET /) in a real headless Chromium, against the emulator under uvicorn.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package
(in the ``test`` extra). Without them these tests skip, except in CI (``CI`` set), where
they fail. The emulator runs in-process on its own event loop in a thread (selenium calls
block), the service under a real uvicorn in a child process, as it would be deployed.

``KLING_PAGE_SCREENSHOTS=1 python -m pytest tests/test_fastapi_page.py`` rewrites the
README's screenshots in ``examples/fastapi_app/``; other runs write them to a temporary
directory only.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from support.loop import WAIT, LoopThread, loop_thread
from support.uvicorn import APP_DIR, service_env, uvicorn

from kling_async.emulator import Emulator, EmulatorConfig
from kling_async.testing import slow_prompt

pytestmark = pytest.mark.slow  # uvicorn and Chromium in child processes

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported by the `browser` fixture
    webdriver = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
)  # fmt: skip
SCREENSHOTS_ENV = "KLING_PAGE_SCREENSHOTS"
SCREENSHOT_SIZES = {"page-360.png": (360, 740), "page-desktop.png": (1024, 800)}
MAX_SCREENSHOT_BYTES = 100_000
TIME_SCALE = 20.0  # as in the README: a std 5 s job takes 3 s, a 10 s one 4.8 s
TERMINAL = {"completed", "failed", "cancelled"}

T = TypeVar("T")

# Each card as the page shows it: one round trip per look.
CARDS_JS = """
return [...document.querySelectorAll('#tasks .card')].map((card) => {
  const bar = card.querySelector('progress');
  const video = card.querySelector('video');
  const error = card.querySelector('.outcome .error');
  return {
    id: card.dataset.taskId,
    status: card.dataset.status,
    prompt: card.querySelector('.prompt').textContent,
    progress: bar.hasAttribute('value') ? bar.value : null,
    text: card.querySelector('.status').textContent,
    error: error ? error.textContent : null,
    video: video ? video.getAttribute('src') : null,
    ready_state: video ? video.readyState : null,
    size: video ? [video.videoWidth, video.videoHeight] : null,
  };
});
"""

# Play a card's video, muted, to its end; answers what happened.
PLAY_JS = """
const [taskId, done] = [arguments[0], arguments[arguments.length - 1]];
const video = document.querySelector(`.card[data-task-id="${CSS.escape(taskId)}"] video`);
video.muted = true;
video.addEventListener('ended', () => done({ended: true, time: video.currentTime}));
video.addEventListener('error', () => done({error: String(video.error && video.error.message)}));
video.play().catch((error) => done({error: String(error)}));
"""

# Installed before the page's own script: every EventSource the page opens, kept for a look.
WATCH_STREAMS_JS = """
const NativeEventSource = window.EventSource;
window.openedStreams = [];
window.EventSource = class extends NativeEventSource {
  constructor(...args) {
    super(...args);
    window.openedStreams.push(this);
  }
};
"""
STREAMS_JS = "return window.openedStreams.map((s) => [new URL(s.url).pathname, s.readyState]);"


# -- the emulator, the service and the browser ---------------------------------------------


@contextmanager
def uvicorn_service(
    emulator: Emulator, log: Path, port: int = 0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`uvicorn app:app` in a child process on loopback ``port`` (0: a free one): URL, process."""
    env = service_env(emulator.url)
    with uvicorn(
        "app:app", "--app-dir", str(APP_DIR), env=env, log=log, port=port, stop_within=WAIT
    ) as running:
        yield running


def require_browser() -> None:
    """Skip (or, in CI, fail) naming what to install when Chromium or selenium is missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if webdriver is None:
        missing.append("the selenium package")
    if not missing:
        return
    reason = (
        f"the browser test needs {', '.join(missing)}: install the OS packages with "
        "`apt-get install chromium chromium-driver` and selenium with `pip install -e '.[test]'`"
    )
    if os.environ.get("CI"):
        pytest.fail(f"in CI the browser test never skips; {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def emulator_thread() -> Iterator[LoopThread]:
    """The loop (in a thread of its own) the emulator serves on."""
    require_browser()
    with loop_thread() as loop:
        yield loop


@pytest.fixture(scope="module")
def emulator(emulator_thread: LoopThread) -> Iterator[Emulator]:
    # spread=0: every job takes exactly its estimate, so timings are the same on every run
    config = EmulatorConfig(time_scale=TIME_SCALE, spread=0.0)
    with emulator_thread.entered(Emulator(config)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def service(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with uvicorn_service(emulator, log) as (url, _process):
        yield url
    text = log.read_text()
    assert "Application shutdown complete" in text, text
    assert "Traceback" not in text, text


@pytest.fixture(scope="module")
def browser(service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium from the OS packages; closed before the service stops."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path: Selenium Manager never runs, so nothing reaches the network.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_STREAMS_JS})
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The page in the browser, read and driven the way a person would."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self) -> None:
        """The page at desktop size with nothing remembered from earlier visits."""
        self.viewport(*SCREENSHOT_SIZES["page-desktop.png"])
        self.driver.get(f"{self.url}/")
        self.driver.execute_script("localStorage.clear()")
        self.reload()
        assert self.cards() == []

    def viewport(self, width: int, height: int) -> None:
        """Emulate a screen of ``width`` x ``height`` CSS pixels (a phone when narrow)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def wait(self, condition: Callable[[], T | None], what: str) -> T:
        """Wait (explicitly, up to WAIT s) until ``condition()`` is truthy; return it."""
        found = WebDriverWait(self.driver, WAIT, poll_frequency=0.1).until(
            lambda _driver: condition(), message=f"waited {WAIT:.0f} s for {what}"
        )
        assert found is not None
        return found

    def wait_for_card(
        self, task_id: str, test: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """The card of ``task_id`` once ``test(card)`` holds."""

        def look() -> dict[str, Any] | None:
            card = self.card(task_id)
            return card if test(card) else None

        return self.wait(look, what)

    def cards(self) -> list[dict[str, Any]]:
        return list(self.driver.execute_script(CARDS_JS))

    def card(self, task_id: str) -> dict[str, Any]:
        (card,) = (card for card in self.cards() if card["id"] == task_id)
        return card

    def fill(self, prompt: str, mode: str = "std", duration: int = 5) -> None:
        """Type the prompt, pick the mode and duration, and press the button."""
        field = self.driver.find_element(By.NAME, "prompt")
        field.clear()
        field.send_keys(prompt)
        Select(self.driver.find_element(By.ID, "mode")).select_by_value(mode)
        Select(self.driver.find_element(By.ID, "duration")).select_by_value(str(duration))
        self.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def submit(self, prompt: str, mode: str = "std", duration: int = 5) -> str:
        """Submit through the form; the new card's task id once the card is there."""
        before = {card["id"] for card in self.cards()}
        self.fill(prompt, mode, duration)
        new = self.wait(
            lambda: [card["id"] for card in self.cards() if card["id"] not in before],
            f"a card for {prompt!r}",
        )
        assert len(new) == 1
        return str(new[0])

    def reload(self) -> None:
        self.driver.refresh()
        self.wait(lambda: self.driver.find_element(By.ID, "submit-form"), "the page")

    def wait_for_end(self, task_id: str) -> dict[str, Any]:
        """The card once its task is over (the page closed its stream)."""
        return self.wait_for_card(
            task_id, lambda card: card["status"] in TERMINAL, f"task {task_id} to end"
        )

    def screenshot(self, name: str, directory: Path) -> Path:
        """A PNG of the viewport at ``SCREENSHOT_SIZES[name]``, written to ``directory``."""
        self.viewport(*SCREENSHOT_SIZES[name])
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path = directory / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest.fixture
def page(browser: Any, service: str) -> Page:
    """The page at desktop size with nothing remembered from earlier tests."""
    shown = Page(browser, service)
    shown.open()
    return shown


# -- the tests -------------------------------------------------------------------------------


def test_a_prompt_shows_a_moving_progress_bar_then_a_playable_video(
    page: Page, emulator: Emulator
) -> None:
    """A submitted prompt gets a card whose progress bar moves, then a <video> that plays."""
    task_id = page.submit("a golden cat running on a sunlit meadow", duration=10)
    running: list[dict[str, Any]] = []

    def completed() -> dict[str, Any] | None:
        card = page.card(task_id)
        if card["status"] in {"pending", "processing"}:
            running.append(card)
        return card if card["status"] == "completed" else None

    card = page.wait(completed, "the task to complete")
    values = [look["progress"] for look in running]
    assert len(set(values)) >= 2, running  # fed by the events as the task ran
    assert values == sorted(values)
    assert any(look["text"].endswith(" left") for look in running), running  # ETA in words
    assert (card["progress"], card["text"], card["error"]) == (100, "Done", None)
    assert card["video"].startswith(f"{emulator.storage_url}/files/{task_id}/")
    assert card["video"].endswith(".mp4")

    # Headless Chromium (Debian's build) decodes the emulator's H.264 sample: a frame is
    # there (readyState >= HAVE_CURRENT_DATA at 160x90) and the clip plays to its end.
    loaded = page.wait_for_card(task_id, lambda card: card["ready_state"] >= 2, "a frame")
    assert loaded["size"] == [160, 90]
    played = page.driver.execute_async_script(PLAY_JS, task_id)
    assert played.get("ended") and played["time"] > 0.5, played
    assert emulator.stats.storage_requests >= 1
    assert emulator.stats.storage_auth_headers == 0


def test_a_failing_prompt_shows_its_error(page: Page, service: str) -> None:
    """A task that fails shows the server's error message on its card, and no video."""
    task_id = page.submit("a [fail] dance")
    card = page.wait_for_end(task_id)
    error = httpx.get(f"{service}/videos/{task_id}", timeout=WAIT).json()["error"]
    assert (card["status"], card["text"], card["video"]) == ("failed", "Failed", None)
    assert error["message"]
    assert card["error"] == f"{error['message']} ({error['code']})"


def test_a_rejected_request_shows_the_validation_message(page: Page, emulator: Emulator) -> None:
    """A 422 from POST /videos shows the field and its rule; no card, nothing submitted."""
    submits = emulator.stats.submit_requests
    page.fill("a cat on a skateboard", mode="pro", duration=15)
    message = page.driver.find_element(By.ID, "form-error")
    page.wait(message.is_displayed, "the validation message")
    assert message.text.startswith("Not submitted: duration: ")
    assert "10" in message.text  # pro goes up to 10 s
    assert page.cards() == []
    assert emulator.stats.submit_requests == submits


def test_three_tasks_at_once_get_a_card_each_and_survive_reloads(
    page: Page, emulator: Emulator
) -> None:
    """Three tasks in flight at once have a card each; reloading keeps and re-attaches them."""
    earlier = set(emulator.stats.created_tasks)
    prompts = ["a red kite over dunes", "a [fail] parade", "a blue whale singing"]
    ids = [page.submit(prompt, duration=10) for prompt in prompts]
    cards = page.cards()
    assert [card["id"] for card in cards] == ids[::-1]  # newest first
    assert [card["prompt"] for card in cards] == prompts[::-1]
    assert not {card["status"] for card in cards} & TERMINAL  # all three in flight at once

    page.reload()  # mid-flight: the cards come back from localStorage and re-attach by id
    assert [card["id"] for card in page.cards()] == ids[::-1]
    ended = [page.wait_for_end(task_id) for task_id in ids]
    assert [card["status"] for card in ended] == ["completed", "failed", "completed"]
    assert emulator.stats.created_tasks.keys() - earlier == set(ids)  # re-attached, not resubmitted

    page.reload()  # long after the end: each card shows its outcome again
    again = {card["id"]: card for card in (page.wait_for_end(task_id) for task_id in ids)}
    closed = sorted([f"/videos/{task_id}/events", 2] for task_id in ids)  # 2: CLOSED
    assert sorted(page.driver.execute_script(STREAMS_JS)) == closed  # one each, none left open
    for task_id in ids[0], ids[2]:
        assert again[task_id]["video"].startswith(f"{emulator.storage_url}/files/{task_id}/")
    assert "fail marker" in again[ids[1]]["error"]
    assert again[ids[1]]["video"] is None


def test_a_task_id_the_service_does_not_know_says_so(page: Page) -> None:
    """A remembered id the service answers 404 for shows "Not found" instead of retrying."""
    page.driver.execute_script(
        "localStorage.setItem('kling-example.tasks', JSON.stringify([{id: 'task_GONE'}]))"
    )
    page.reload()
    card = page.wait_for_card("task_GONE", lambda card: card["status"] == "lost", "the 404")
    assert card["text"] == "Not found"
    assert "does not know this task" in card["error"]


def test_a_stream_cut_by_a_crashed_service_reconnects_and_the_card_still_ends(
    browser: Any, emulator: Emulator, tmp_path: Path
) -> None:
    """When the service dies mid-stream, the page says so, reconnects once it is back, ends."""
    log = tmp_path / "uvicorn.log"
    with uvicorn_service(emulator, log) as (url, process):
        page = Page(browser, url)
        page.open()
        task_id = page.submit("a lighthouse in a storm")
        page.wait_for_card(task_id, lambda card: card["progress"] is not None, "the first event")
        process.kill()
        page.wait_for_card(
            task_id,
            lambda card: card["text"] == "Connection lost; reconnecting…",
            "the page to notice the lost stream",
        )
    with uvicorn_service(emulator, log, port=int(url.rsplit(":", 1)[1])):
        card = page.wait_for_end(task_id)
    assert card["status"] == "completed"
    assert card["video"].startswith(f"{emulator.storage_url}/files/{task_id}/")


def test_the_page_fits_a_phone_names_its_controls_and_makes_the_screenshots(
    page: Page, emulator_thread: LoopThread, emulator: Emulator, tmp_path: Path
) -> None:
    """At 360 px nothing scrolls sideways, every control has a name, statuses are live."""
    emulator_thread.call(slow_prompt, emulator, "sunrise", 4.0)  # 12 s
    cat = page.submit("a golden cat running on a sunlit meadow")
    failed = page.submit("a [fail] dance in the rain")
    sunrise = page.submit("a time-lapse of a sunrise over the sea")
    page.wait_for_card(cat, lambda card: (card["ready_state"] or 0) >= 2, "the cat's first frame")
    page.wait_for_end(failed)
    # For the committed shots, wait for a second reading: the time left then comes from the
    # progress rate, not the estimate (which the slowed prompt overruns).
    moved = 20 if os.environ.get(SCREENSHOTS_ENV) else 1
    page.wait_for_card(sunrise, lambda card: (card["progress"] or 0) >= moved, "progress")

    tree = page.driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    names = {
        (node["role"]["value"], node.get("name", {}).get("value"))
        for node in tree
        if not node.get("ignored") and node["role"]["value"] in {"textbox", "combobox"}
    }
    assert names >= {("textbox", "Prompt"), ("combobox", "Mode"), ("combobox", "Duration")}
    bars = [node for node in tree if node["role"]["value"] == "progressbar"]
    assert len(bars) == 3
    assert all(node.get("name", {}).get("value", "").startswith("Progress of") for node in bars)
    live = page.driver.execute_script(
        "return [...document.querySelectorAll('.card .status')].map(s => s.ariaLive)"
    )
    assert live == ["polite"] * 3

    for name in SCREENSHOT_SIZES:
        path = page.screenshot(name, tmp_path)
        if name == "page-360.png":
            widths = page.driver.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert widths == [360, 360]  # no horizontal scroll on a phone
        assert 0 < path.stat().st_size < MAX_SCREENSHOT_BYTES
        if os.environ.get(SCREENSHOTS_ENV):
            shutil.copyfile(path, APP_DIR / name)


def test_a_story_in_4k_shots_is_sent_as_the_api_names_it(page: Page, emulator: Emulator) -> None:
    """4K and a list of shots: the task the emulator gets is kling-v3 multi-shot (shots
    numbered from 1, lasting their total), the card names its first shot and ends; the
    shot controls are named after their place and fit a phone."""
    page.viewport(360, 740)
    driver = page.driver
    driver.find_element(By.NAME, "prompt").clear()
    for _ in range(3):
        driver.find_element(By.ID, "add-shot").click()
    rows = driver.find_elements(By.CSS_SELECTOR, "#shot-list .shot")
    story = [("a seed in dark soil", "2"), ("a sprout breaks through", "3"), ("it blooms", "2")]
    for row, (prompt, seconds) in zip(rows, story, strict=True):
        row.find_element(By.CLASS_NAME, "shot-prompt").send_keys(prompt)
        field = row.find_element(By.CLASS_NAME, "shot-seconds")
        field.clear()
        field.send_keys(seconds)
    rows[2].find_element(By.CLASS_NAME, "remove-shot").click()  # two shots: 5 s
    tree = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
    names = {node.get("name", {}).get("value") for node in tree if not node.get("ignored")}
    assert {"Shot 1 prompt", "Shot 2 seconds", "Remove shot 2"} <= names
    assert "Shot 3 prompt" not in names
    widths = driver.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert widths == [360, 360]
    page.viewport(*SCREENSHOT_SIZES["page-desktop.png"])
    Select(driver.find_element(By.ID, "mode")).select_by_value("4k")
    before = {card["id"] for card in page.cards()}
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    (task_id,) = page.wait(
        lambda: [card["id"] for card in page.cards() if card["id"] not in before], "the card"
    )
    card = page.wait_for_end(task_id)
    assert (card["status"], card["prompt"]) == ("completed", "a seed in dark soil")
    request = emulator.task_record(task_id).request
    assert request == {
        "model": "kling-v3",
        "mode": "4k",
        "duration": 5,
        "aspect_ratio": "16:9",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": [
            {"index": 1, "prompt": "a seed in dark soil", "duration": 2},
            {"index": 2, "prompt": "a sprout breaks through", "duration": 3},
        ],
    }

"""The embedded system for the dashboard's browser tests: the gateway (which serves the
dashboard), preprocess, two fast trainers, the evaluator and batch inference, each in its own
OS process on the SQLite bus behind API keys, and a headless Chromium (Debian's) with a
page that records console errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from flts.security import create_key
from flts.settings import Settings
from flts.supervisor import Supervisor, service_specs
from servers import free_port
from servers.browser import launch_chromium
from servers.client import healthy, wait_http

MODELS = ["PERSISTENCE", "RIDGE"]
#: Where the tests write a screenshot of each page (the checkout's build folder).
SCREENSHOTS = Path("build/ui")
#: The Barcelona datasets, beside the checkout (docs/accuracy.md).
DATA_DIR = Path(os.environ.get("FLTS_DATA_DIR", "../shared/datasets"))
_SERVICES = {"gateway", "preprocess", "evaluate", "batch-inference"} | {
    f"train-{m.lower()}" for m in MODELS
}


@dataclass(frozen=True)
class System:
    url: str  # the gateway, which serves the dashboard at /ui/
    viewer_key: str  # upload scope: reads the dashboard, uploads, no admin
    admin_key: str
    logs: Path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("ui-system")
    port = free_port()
    keys_file = root / "api-keys.json"
    viewer = create_key(keys_file, "viewer", ["upload"])
    admin = create_key(keys_file, "operator", ["admin"])
    env = {
        **os.environ,
        "FLTS_HOME": str(root / "home"),
        "FLTS_SECURITY__KEYS_FILE": str(keys_file),
        "FLTS_GATEWAY__PORT": str(port),
        "FLTS_EVALUATION__EXPECTED_MODELS": json.dumps(MODELS),
    }
    settings = Settings(home=root / "home")
    specs = [s for s in service_specs(settings, MODELS) if s.name in _SERVICES]
    supervisor = Supervisor(specs, log_dir=root / "logs", env=env, max_restarts=0)
    supervisor.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(lambda: healthy(url), 90, "the gateway")
        yield System(url, viewer, admin, root / "logs")
    finally:
        supervisor.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch_chromium(playwright)
    yield chromium
    chromium.close()


@dataclass
class Console:
    """Console errors and uncaught exceptions of a page. Chromium logs every answer with an
    error status as a console error ("Failed to load resource: ... status of 403"); a test that
    provokes a refusal on purpose names its status in ``refusals``, every other one counts."""

    errors: list[str] = field(default_factory=list)
    refusals: set[int] = field(default_factory=set)

    def on_message(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        for status in self.refusals:
            if message.text.startswith(
                f"Failed to load resource: the server responded with a status of {status}"
            ):
                return
        self.errors.append(f"console: {message.text} ({message.location})")

    def on_error(self, error: Exception) -> None:
        self.errors.append(f"page error: {error}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh tab at laptop size (1366x768) whose console errors land in ``console``."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    tab = context.new_page()
    tab.on("console", console.on_message)
    tab.on("pageerror", console.on_error)
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


def screenshot(page: Page, name: str) -> Path:
    """Write the whole page to build/ui/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

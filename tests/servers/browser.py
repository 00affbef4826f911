"""Debian's Chromium driven by Playwright, for the dashboard's browser tests and benchmark.

The browser is the system's ``chromium`` (``make system-deps`` installs it); Playwright never
downloads one. The flags keep a headless Chromium from reaching for the network on its own
(component updates, sync, background fetches), which hangs it on a closed network.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium, or an error that says how to get it."""
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError(
            "Debian's chromium is not installed: run `make system-deps` as root "
            "(apt-get install chromium)"
        )
    return path


def launch_chromium(playwright: Playwright) -> Browser:
    """A headless Chromium of the system (see the module docstring)."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)

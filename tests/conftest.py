import json
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from helpers import PARITY_CASES, run_reference


@pytest.fixture(scope="session")
def timm_reference(tmp_path_factory):
    """Run every timm parity case once per session (in its own process); returns the folder."""
    reference_cases = [{k: c[k] for k in ("id", "model", "kwargs", "checkpoint_kwargs") if k in c} for c in PARITY_CASES]
    out = tmp_path_factory.mktemp("timm_ref")
    cases_file = out / "cases.json"
    cases_file.write_text(json.dumps(reference_cases))
    run_reference("timm_reference.py", cases_file, out)
    return out


CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium (make test installs it); playwright downloads nothing
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the explorer page's tests."""
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OfflinePage:
    """A page opened from disk with every other request refused; collects console errors and
    the refused requests, and how long the page took to load and draw its first state."""

    def __init__(self, browser, path: Path, viewport: dict):
        self.context = browser.new_context(viewport=viewport)
        self.tab = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.tab.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.tab.on("pageerror", lambda error: self.errors.append(str(error)))
        self.tab.route("**/*", lambda route: self._only(route, path.as_uri()))
        started = time.perf_counter()
        self.tab.goto(path.as_uri())
        settled(self.tab)
        self.load_seconds = time.perf_counter() - started

    def _only(self, route, uri: str):
        if route.request.url == uri:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def close(self):
        self.context.close()
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.requests, f"the page asked the network for {self.requests}"


def settled(tab):
    """Wait until the explorer has drawn the current state (it marks the body busy while drawing)."""
    tab.wait_for_function("document.body.dataset.busy === '0'")

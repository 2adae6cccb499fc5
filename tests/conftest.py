import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

TESTS = Path(__file__).parent
REFERENCE = TESTS / "reference"


def run_reference(script: str, *args, env: dict | None = None) -> None:
    """Run a reference script (timm, onnxruntime) in its own Python process."""
    result = subprocess.run(
        [sys.executable, str(REFERENCE / script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")


# Parity cases: timm model + kwargs on the reference side, the vitprobe arch + spec
# overrides on ours. Depth is cut where the full depth adds run time but no coverage
# (one full-depth ViT-B/16 stays).
PARITY_CASES = [
    dict(id="vit_b16", model="vit_base_patch16_224", kwargs={}, arch="vit_base_patch16_224", overrides={}),
    dict(id="vit_t16", model="vit_tiny_patch16_224", kwargs=dict(depth=2), arch="vit_tiny_patch16_224", overrides=dict(depth=2)),
    dict(id="vit_s32_384", model="vit_small_patch32_384", kwargs=dict(depth=2), arch="vit_small_patch32_384", overrides=dict(depth=2)),
    dict(id="vit_b8", model="vit_base_patch8_224", kwargs=dict(depth=1), arch="vit_base_patch8_224", overrides=dict(depth=1)),
    dict(id="vit_l16_384", model="vit_large_patch16_384", kwargs=dict(depth=1), arch="vit_large_patch16_384", overrides=dict(depth=1)),
    dict(id="deit_s", model="deit_small_patch16_224", kwargs=dict(depth=2), arch="deit_small_patch16_224", overrides=dict(depth=2)),
    dict(id="deit_t_dist", model="deit_tiny_distilled_patch16_224", kwargs=dict(depth=2), arch="deit_tiny_distilled_patch16_224", overrides=dict(depth=2)),
    dict(id="dino_s16", model="vit_small_patch16_224.dino", kwargs=dict(depth=2), arch="vit_small_patch16_224.dino", overrides=dict(depth=2)),
    dict(id="dinov2_s14", model="vit_small_patch14_dinov2", kwargs=dict(depth=2, img_size=224, num_classes=0), arch="vit_small_patch14_dinov2", overrides=dict(depth=2, image_size=224)),
    dict(id="dinov2_s14_reg4", model="vit_small_patch14_reg4_dinov2", kwargs=dict(depth=2, img_size=224, num_classes=0), arch="vit_small_patch14_reg4_dinov2", overrides=dict(depth=2, image_size=224)),
    # Position-embedding resampling, judged by timm's own checkpoint filter:
    # a 224 checkpoint run at 384 (upsampling), a 518 DINOv2 checkpoint run at 224 (downsampling).
    dict(id="vit_t16_224_to_384", model="vit_tiny_patch16_224", kwargs=dict(depth=2, img_size=384), checkpoint_kwargs=dict(depth=2), arch="vit_tiny_patch16_224", overrides=dict(depth=2, image_size=384)),
    dict(id="dinov2_518_to_224", model="vit_small_patch14_dinov2", kwargs=dict(depth=1, img_size=224, num_classes=0), checkpoint_kwargs=dict(depth=1, num_classes=0), arch="vit_small_patch14_dinov2", overrides=dict(depth=1, image_size=224)),
]


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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


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

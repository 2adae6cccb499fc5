"""User text (file names, a checkpoint label) escaped for every place it lands (issue 23 item 1):
JSON inside the report's and the explorer's <script> blocks, matplotlib's mathtext, the console
and the logs. The payloads are made here; the pages are opened in a real Chromium."""

import io
import json

import numpy as np
import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from conftest import OfflinePage, settled
from helpers import copy_workflow, snakemake
from vitprobe.escape import mathtext_literal, script_json, terminal_text

SCRIPT_PAYLOADS = [
    "</script><script>window.__pwned = 1</script>",
    "</SCRIPT ><script>window.__pwned = 2</script>",
    "<!--<script>",
    "<!-- <script> -->",
    "]]></style>&amp;\u2028\u2029'\"\\",
]
# A name with an escape code and a newline forging a log line of its own.
FORGED = "red\x1b[31m\nINFO all images passed"
FILE_NAMES = ["<!--<script>.png", "$\\foo$.png", "price $5 or $6.png", f"{FORGED}.png"]
BROKEN = f"not an image {FORGED}.jpg"  # rejected, so logged with its name
CHECKPOINT = "</script><script>window.__pwned = 3</script><!--<script> $\\bar$"


@pytest.mark.parametrize("text", SCRIPT_PAYLOADS)
def test_script_json_round_trips_without_markup(text):
    encoded = script_json({"label": text, "ids": [text]})
    assert not any(c in encoded for c in "<>&\u2028\u2029")
    assert json.loads(encoded) == {"label": text, "ids": [text]}


def _drawn(text: str, **kwargs) -> np.ndarray:
    fig = Figure(figsize=(3, 0.6), dpi=80)
    fig.text(0.02, 0.4, text, **kwargs)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


@pytest.mark.parametrize("text", ["$\\foo$.png", "price $5 or $6.png", "a \\$ b $c$", "$$", "no dollars"])
def test_mathtext_literal_draws_the_text_as_it_is(text):
    """Escaped, the text draws pixel for pixel as with math parsing off (and `$\\foo$` no longer
    fails to parse)."""
    np.testing.assert_array_equal(_drawn(mathtext_literal(text)), _drawn(text, parse_math=False))


def test_terminal_text_shows_controls_as_escapes():
    assert terminal_text(FORGED) == "red\\x1b[31m\\nINFO all images passed"
    assert terminal_text("caf\u00e9 \u202eevil \udcff") == "caf\u00e9 \\u202eevil \\udcff"
    assert terminal_text("plain name.png") == "plain name.png"


def _image_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A real run over images named with the payloads, with a hostile checkpoint label; then its report."""
    tmp = tmp_path_factory.mktemp("hostile")
    images = tmp / "images"
    images.mkdir()
    for seed, name in enumerate(FILE_NAMES):
        (images / name).write_bytes(_image_bytes(seed))
    (images / BROKEN).write_bytes(b"no image here")
    (tmp / "work").mkdir()
    workdir = copy_workflow(tmp / "work")
    config = {
        "experiment": "hostile",
        "images": {"source": "folder", "path": str(images)},
        "models": {
            "vit": {
                "arch": "vit_tiny_patch16_224",
                "weights": "random",
                "seed": 1,
                "spec": {"depth": 1, "num_classes": 10},
                "checkpoint": CHECKPOINT,
            }
        },
        "extract": {"batch_size": 4, "shard_size": 8},
        "cka": {"group_size": 4},
        "analysis": {"map_images": len(FILE_NAMES), "pca": {"enabled": False}},
    }
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--configfile", "c.yaml")
    snakemake(workdir, "--configfile", "c.yaml", "--report", "report.html")
    return workdir, workdir / "results" / "hostile", result


def test_hostile_names_run_and_reach_logs_escaped(hostile_run):
    workdir, out, result = hostile_run
    assert (out / "figures" / "cls_attention_heads_vit_image2.png").is_file()  # mathtext no longer fails
    console = result.stdout + result.stderr
    logs = "".join(p.read_text() for p in (out / "logs").rglob("*.log"))
    for text in (console, logs):
        assert "\x1b" not in text
        assert "\nINFO all images passed" not in text
    assert "not an image red\\x1b[31m\\nINFO all images passed.jpg" in (out / "logs" / "sample.log").read_text()


def test_report_runs_no_injected_script(browser, hostile_run):
    workdir, _, _ = hostile_run
    report = workdir / "report.html"
    html = report.read_text()
    assert "__pwned" in html  # the payload is in the page, as data
    tab = browser.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(report.as_uri())
    tab.wait_for_function("typeof results === 'object' && Object.keys(results).length > 0")
    assert tab.evaluate("window.__pwned") is None
    params = tab.evaluate("Object.values(results).map(r => r.job_properties.params).join(' ')")
    assert "__pwned = 3" in params  # the label is shown as text
    assert not errors, errors
    tab.close()


def test_explorer_lists_every_image_and_runs_no_script(browser, hostile_run):
    _, out, _ = hostile_run
    page = OfflinePage(browser, out / "explorer.html", viewport={"width": 1000, "height": 1100})
    tab = page.tab
    settled(tab)
    shown = tab.evaluate("[...document.querySelectorAll('select#image option')].map(o => o.textContent)")
    assert sorted(shown) == sorted(FILE_NAMES)
    assert tab.evaluate("window.__pwned") is None
    assert CHECKPOINT in tab.evaluate("document.querySelector('section.panel h2').textContent")
    page.close()

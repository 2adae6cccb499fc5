"""extract.shard_size: auto: the size from the start-up bound and the cores, hand-computed; the
start-up in images read from this machine's calibration record; a real dry run that logs the
decision and plans that many extract jobs."""

import json
import re

import pytest
from snakemake.utils import validate

from test_config import BASE, dry_run
from vitprobe.pipeline.calibration import record_path
from vitprobe.pipeline.config import SCHEMA, model_entries
from vitprobe.pipeline.shard_size import (
    FALLBACK_STARTUP_IMAGES,
    auto_shard_size,
    measured_startup_images,
    resolve_shard_size,
    smallest_shard,
)


def test_smallest_shard_keeps_the_start_up_at_3_percent():
    # s r = 36: 36 / (36 + n) <= 0.03 <=> n >= 36 * 0.97 / 0.03 = 1164
    assert smallest_shard(36) == 1164
    assert 36 / (36 + 1164) <= 0.03 < 36 / (36 + 1163)


@pytest.mark.parametrize(
    ("images", "models", "slots", "startup", "size"),
    [
        # 5 one-shard jobs on 2 cores: 3 rounds x (1000 + 36), the last on one core; two shards
        # per model fill 5 rounds: 5 x (504 + 36) = 2700 < 3108
        (1000, 5, 2, 36, 504),
        (1000, 5, 1, 36, 1000),  # one core: nothing idles, one job per model
        (1000, 4, 2, 36, 1000),  # 4 jobs fill 2 rounds on 2 cores
        (14, 2, 2, 36, 16),  # the demo: one shard, rounded up to whole groups of 8
        (100, 1, 2, 36, 56),  # one model, two cores: two shards (50 -> 56, whole groups)
        (50_000, 5, 2, 36, 1192),  # 42 shards of at least 1164 (50000 / 42 = 1190.5 -> 1192), 105 full rounds
        # 64 cores: 42 shards per model are 210 jobs, 4 rounds with 18 jobs in the last; 51 shards
        # of 984 fill 4 rounds but one slot: 4 x (984 + 36) = 4080 < 4 x (1192 + 36)
        (50_000, 5, 64, 36, 984),
        (1000, 5, 16, 36, 168),  # 16 cores, 5 models: at least 4 shards; 6 (166.7 -> 168) fill 2 rounds
        (0, 2, 2, 36, 8),  # no images: one group's size, not a division by zero
        (50_000, 5, 1, 7500, 50_000),  # a GPU taking one job at a time (15 s x 500 img/s): one job per model
        # the same start-up with 2 parallel jobs: 5 one-shard jobs take 3 rounds, two shards of 25,000 take 5
        # shorter ones: 5 x (25000 + 7500) = 162500 < 3 x (50000 + 7500)
        (50_000, 5, 2, 7500, 25_000),
    ],
)
def test_auto_shard_size(images, models, slots, startup, size):
    assert auto_shard_size(images, models, slots, startup, multiple=8) == size


def record(candidates):
    return {"candidates": candidates}


def test_start_up_in_images_from_the_fastest_candidate_of_the_backend():
    rec = record(
        [
            {
                "backend": "tensorflow",
                "compile": "graph",
                "precision": "float32",
                "img_s": 4.0,
                "import_s": 3.0,
                "build_s": 1.0,
                "compile_s": 2.0,
            },
            {
                "backend": "tensorflow",
                "compile": "xla",
                "precision": "float32",
                "img_s": 5.0,
                "import_s": 3.0,
                "build_s": 1.0,
                "compile_s": 4.0,
            },
            {"backend": "tensorflow", "compile": "graph", "precision": "bfloat16", "img_s": 20.0, "build_s": 1.0},
            {"backend": "jax", "compile": "jit", "precision": "float32", "img_s": 9.0, "build_s": 1.0},
            {"backend": "torch", "compile": "eager", "precision": "float32", "img_s": None},
        ]
    )
    assert measured_startup_images(rec, "tensorflow", "float32") == pytest.approx((3 + 1 + 4) * 5.0)
    assert measured_startup_images(rec, "jax", "float32") == pytest.approx(9.0)
    assert measured_startup_images(rec, "torch", "float32") is None


def config_with(shard_size, images=1000, models=("a", "b")):
    config = {
        "experiment": "sizes",
        "images": {"source": "bundled", "count": images},
        "models": {m: {"arch": "vit_tiny_patch16_224", "weights": "random"} for m in models},
        "extract": {"shard_size": shard_size},
    }
    validate(config, str(SCHEMA))  # the schema's defaults
    return config, model_entries(config)


def test_resolve_reads_this_machine_s_record(tmp_path, monkeypatch):
    monkeypatch.setenv("VITPROBE_CACHE", str(tmp_path))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    config, entries = config_with("auto")
    assert resolve_shard_size(config, entries, 1000, slots=2).size == 1000  # the fallback: 36 images
    assert "no calibration record" in resolve_shard_size(config, entries, 1000, slots=2).reason
    path = record_path("vit_tiny_patch16_224", 8, 1)
    path.parent.mkdir(parents=True)
    # a fast model: 2 s of start-up at 60 img/s is worth 120 images, so 3880 per job or more
    candidate = {
        "backend": "tensorflow",
        "compile": "graph",
        "precision": "float32",
        "img_s": 60.0,
        "import_s": 1.0,
        "build_s": 0.5,
    }
    path.write_text(json.dumps(record([{**candidate, "compile_s": 0.5}])))
    sizing = resolve_shard_size(config, entries, 20_000, slots=2)
    assert smallest_shard(120) == 3880 and sizing.size == 4000  # 20000 // 3880 = 5 shards of 4000
    assert "measured for a, b" in sizing.reason and "120 images" in sizing.reason
    assert resolve_shard_size(config, entries, 20_000, slots=2).size == auto_shard_size(20_000, 2, 2, 120, 8)
    path.write_text("{broken")  # an unreadable record counts as none
    assert resolve_shard_size(config, entries, 20_000, slots=2).size == auto_shard_size(20_000, 2, 2, FALLBACK_STARTUP_IMAGES, 8)
    assert resolve_shard_size(config_with(40)[0], entries, 20_000).size == 40  # an integer as given


def test_auto_is_the_default_and_a_run_logs_the_resolved_size(tmp_path):
    config = json.loads(json.dumps(BASE))  # no extract.shard_size
    result = dry_run(tmp_path, config, env={"VITPROBE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.output
    # 8 images, one model: one shard per core of this machine, each of whole CKA groups
    line = re.search(r"extract\.shard_size: (\d+) images per extract job \(auto: (.*)\)", result.output)
    assert line, result.output
    assert "no calibration record" in line.group(2) and int(line.group(1)) % 8 == 0


def test_a_string_other_than_auto_is_refused(tmp_path):
    config = json.loads(json.dumps(BASE))
    config["extract"] = {"shard_size": "big"}
    result = dry_run(tmp_path, config)
    assert result.returncode != 0 and "shard_size" in result.output

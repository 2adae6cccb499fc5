"""extract.compile: the compile mode an extract job takes from this machine's calibration record,
an explicit choice, or (without a usable record) the backend's default, and the log line that says
which and why; and the calibration itself, measured end to end on a tiny model."""

import json
import logging

import keras
import numpy as np
import pandas as pd
import pytest

from test_config import BASE, dry_run
from vitprobe.hardware import machine_key
from vitprobe.pipeline.calibration import (
    CalibrationError,
    choose_compile_mode,
    load_record,
    measure,
    record_path,
    runtime_versions,
    save,
)

BACKEND = keras.backend.backend()
VERSIONS = runtime_versions(BACKEND)
SETTINGS = dict(arch="vit_tiny_patch16_224", batch_size=8, threads=1, backend="tensorflow")


def candidate(backend, mode, precision, img_s, compile_s=1.0, versions=None):
    versions = versions or ({**VERSIONS} if backend == BACKEND else {"keras": VERSIONS["keras"], backend: "1.0"})
    return {
        "backend": backend,
        "compile": mode,
        "precision": precision,
        "versions": versions,
        "img_s": img_s,
        "compile_s": compile_s,
    }


def write_record(path, candidates):
    path.write_text(json.dumps({"cpu_model": "Test CPU", "date": "2026-11-25T00:00:00", "threads": 1, "candidates": candidates}))
    return path


pytestmark = pytest.mark.skipif(BACKEND != "tensorflow", reason="the records below are for the tensorflow backend's modes")


@pytest.fixture
def record(tmp_path):
    return write_record(
        tmp_path / "record.json",
        [
            candidate("tensorflow", "graph", "float32", 2.84, compile_s=4.0),
            candidate("tensorflow", "xla", "float32", 3.05, compile_s=9.0),
            candidate("tensorflow", "graph", "bfloat16", 13.9),  # faster, not exact: never taken for float32
            candidate("jax", "jit", "float32", 9.0),  # another backend: named, never taken
            candidate("torch", "eager", "float32", None),  # a candidate that failed to run
        ],
    )


def test_takes_the_fastest_exact_mode_of_the_running_backend(record):
    choice = choose_compile_mode("auto", precision="float32", images=250, path=record, **SETTINGS)
    assert choice.mode == "xla" and not choice.warning
    assert "xla 3.05 img/s" in choice.reason and "graph 2.84 img/s" in choice.reason
    assert "jax jit 9.00 img/s" in choice.reason and "not switched automatically" in choice.reason
    assert "13.9" not in choice.reason
    assert choose_compile_mode("auto", precision="bfloat16", images=250, path=record, **SETTINGS).mode == "graph"


def test_compile_time_counts_for_a_small_job(record):
    # 8 images: graph 4.0 + 8 / 2.84 = 6.8 s beats xla 9.0 + 8 / 3.05 = 11.6 s
    assert choose_compile_mode("auto", precision="float32", images=8, path=record, **SETTINGS).mode == "graph"


def test_an_explicit_choice_wins(record):
    choice = choose_compile_mode("graph", precision="float32", images=250, path=record, **SETTINGS)
    assert (choice.mode, choice.reason) == ("graph", "set by extract.compile")
    with pytest.raises(ValueError, match="'jit' is not a compile mode of the tensorflow backend"):
        choose_compile_mode("jit", precision="float32", images=250, path=record, **SETTINGS)


def test_without_a_record_the_default_runs_and_the_reason_says_how_to_calibrate(tmp_path):
    path = tmp_path / "none.json"
    choice = choose_compile_mode("auto", precision="float32", images=250, path=path, **SETTINGS)
    assert choice.mode == "graph" and not choice.warning
    assert str(path) in choice.reason
    assert "python -m vitprobe.pipeline.calibration --arch vit_tiny_patch16_224 --batch 8 --threads 1" in choice.reason


def test_a_model_with_spec_overrides_has_its_own_record(tmp_path, monkeypatch):
    monkeypatch.setenv("VITPROBE_CACHE", str(tmp_path))
    choice = choose_compile_mode("auto", precision="float32", images=250, spec_overrides={"depth": 1}, **SETTINGS)
    assert str(record_path("vit_tiny_patch16_224", 8, 1, {"depth": 1})) in choice.reason
    assert """--threads 1 --spec '{"depth": 1}'""" in choice.reason


@pytest.mark.parametrize(
    "content,words",
    [
        ("{not json", ["not a readable calibration record"]),
        (json.dumps({"date": "x"}), ["no 'candidates' list"]),
        (json.dumps({"candidates": [{"backend": "tensorflow"}]}), ["without backend, compile and precision"]),
        (json.dumps({"candidates": [candidate("tensorflow", "xla", "float32", -1.0)]}), ["has img_s -1.0"]),
        (
            json.dumps({"candidates": [candidate("tensorflow", "xla", "float32", 3.0, versions={"tensorflow": "0.1"})]}),
            ["unusable here", "measured under {'tensorflow': '0.1'}"],
        ),
        (
            json.dumps({"candidates": [candidate("jax", "jit", "float32", 3.0)]}),
            ["unusable here", "no tensorflow float32 measurement"],
        ),
    ],
)
def test_a_bad_record_falls_back_with_a_warning_naming_it(tmp_path, content, words):
    path = tmp_path / "record.json"
    path.write_text(content)
    choice = choose_compile_mode("auto", precision="float32", images=250, path=path, **SETTINGS)
    assert choice.mode == "graph" and choice.warning
    for word in [str(path), "remeasure", *words]:
        assert word in choice.reason


def test_saving_keeps_the_other_precisions_measurements(tmp_path):
    path = tmp_path / "m" / "record.json"
    save(
        {"candidates": [candidate("tensorflow", "graph", "float32", 2.0), candidate("tensorflow", "graph", "bfloat16", 1.0)]},
        path,
    )
    save({"candidates": [candidate("tensorflow", "graph", "float32", 3.0)]}, path)
    rates = {c["precision"]: c["img_s"] for c in load_record(path)["candidates"]}
    assert rates == {"float32": 3.0, "bfloat16": 1.0}
    path.write_text("{broken")
    with pytest.raises(CalibrationError):
        load_record(path)
    save({"candidates": [candidate("tensorflow", "xla", "float32", 3.0)]}, path)  # a broken record is replaced
    assert [c["compile"] for c in load_record(path)["candidates"]] == ["xla"]


def test_the_record_is_per_cpu_model_and_features():
    intel = "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\nflags\t\t: avx2 avx512f amx_bf16\n"
    assert machine_key(intel).startswith("intel-r-xeon-r-platinum-8481c-cpu-2-70ghz-")
    assert machine_key(intel) != machine_key(intel.replace(" amx_bf16", ""))


def test_an_explicit_mode_of_another_backend_is_refused_before_any_job(tmp_path):
    result = dry_run(tmp_path, {**BASE, "extract": {"compile": "jit"}}, env={"KERAS_BACKEND": "tensorflow"})
    assert result.returncode != 0
    assert "extract.compile: jit is not a compile mode of the tensorflow backend" in result.output, result.output[-2000:]
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_calibration_end_to_end_then_the_extract_job_logs_its_choice(tmp_path, monkeypatch, caplog):
    """Measure both tensorflow modes on a one-block model (each in its own process), store the
    record where the extract stage looks, and run the stage: its log names the mode and the numbers."""
    from vitprobe.atomic import write_parquet
    from vitprobe.pipeline.config import validated_entries
    from vitprobe.pipeline.extract import run_extract

    monkeypatch.setenv("VITPROBE_CACHE", str(tmp_path / "cache"))
    overrides = {"depth": 1, "image_size": 32}
    record = measure(
        "vit_tiny_patch16_224",
        2,
        1,
        candidates=[("tensorflow", "graph"), ("tensorflow", "xla")],
        repeats=1,
        batches=2,
        spec_overrides=overrides,
        progress=lambda line: None,
    )
    rates = {c["compile"]: c["img_s"] for c in record["candidates"]}
    assert set(rates) == {"graph", "xla"} and all(r > 0 for r in rates.values()), record
    assert record["cpu_model"] and record["batch_size"] == 2 and record["threads"] == 1
    save(record, record_path("vit_tiny_patch16_224", 2, 1, overrides))
    assert record_path("vit_tiny_patch16_224", 2, 1) != record_path("vit_tiny_patch16_224", 2, 1, overrides)

    crops = tmp_path / "crops.npy"
    np.save(crops, np.random.default_rng(0).integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8))
    manifest = tmp_path / "manifest.parquet"
    write_parquet(pd.DataFrame({"image_id": ["a", "b", "c"], "label": -1}), manifest)
    outputs = {
        name: str(tmp_path / f"{name}.{ext}")
        for name, ext in (
            ("predictions", "parquet"),
            ("per_image", "parquet"),
            ("maps", "npz"),
            ("representations", "npz"),
            ("map_images", "npz"),
        )
    }
    settings = validated_entries({"tiny": {"arch": "vit_tiny_patch16_224", "weights": "random", "spec": overrides}})[
        "tiny"
    ].settings
    with caplog.at_level(logging.INFO, logger="vitprobe"):
        run_extract(
            "tiny",
            settings,
            str(crops),
            str(manifest),
            0,
            1,
            3,
            **outputs,
            batch_size=2,
            precision="float32",
            group_size=None,
            analysis={},
            attention_kernel="auto",
            compile_mode="auto",
            threads=1,
            map_rows=0,
        )
    expected = min(record["candidates"], key=lambda c: c["compile_s"] + 3 / c["img_s"])["compile"]  # 3 images
    line = next(r.getMessage() for r in caplog.records if "compiled as" in r.getMessage())
    assert line.startswith(f"tiny: compiled as {expected} (fastest for 3 images at float32"), line
    assert f"graph {rates['graph']:.2f} img/s" in line and f"xla {rates['xla']:.2f} img/s" in line
    assert len(pd.read_parquet(outputs["per_image"])) == 3 * 3  # 3 images x 3 heads of one block

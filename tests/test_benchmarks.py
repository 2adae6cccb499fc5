"""The benchmark scripts run end to end on tiny cases (shallow models, a few photos): each prints
its table, creates its --out folder and writes a Markdown and a JSON record naming the CPU.
The numbers themselves are recorded by `make bench` / `make bench-pipeline`, never asserted here
beyond being measured (positive) and, where two sides compute the same thing, agreeing."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from record import FLAGS, record  # noqa: E402  (benchmarks/ is not a package)


def run_benchmark(script: str, out: Path, *args: str) -> tuple[str, str, dict]:
    """stdout, the Markdown written and the JSON written by ``benchmarks/<script> --out <out>``."""
    assert not out.parent.exists()  # --out's parents are created too
    command = [sys.executable, str(REPO / "benchmarks" / script), *args, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    [markdown], [record_json] = sorted(out.glob("*.md")), sorted(out.glob("*.json"))
    return result.stdout, markdown.read_text(), json.loads(record_json.read_text())


def assert_names_cpu(data: dict, markdown: str) -> None:
    assert data["cpu_model"] and data["cpu_model"] in markdown
    assert set(data["cpu_flags"]) <= set(FLAGS) and data["cpu_count"] > 0


def test_record_prints_before_it_writes(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError):
        record(blocker / "out", "stem", "| table |", {})
    assert capsys.readouterr().out == "| table |\n"
    paths = record(tmp_path / "new" / "out", "stem", "| table |", {"x": 1})
    assert [p.name for p in paths] == ["stem.md", "stem.json"] and json.loads(paths[1].read_text()) == {"x": 1}


@pytest.mark.slow
def test_attribution_bench_tiny(tmp_path):
    stdout, markdown, data = run_benchmark(
        "attribution.py",
        tmp_path / "new" / "attr",
        "--depth",
        "1",
        "--images",
        "4",
        "--batch",
        "2",
        "--runs",
        "1",
        "--threads",
        "1",
    )
    assert markdown.strip() in stdout and "vitprobe / timm" in markdown
    assert_names_cpu(data, markdown)
    assert set(data["sides"]) == {"vitprobe", "timm"} and all(s["maps_per_second"] > 0 for s in data["sides"].values())
    assert max(data["map_difference"].values()) < 1e-4  # both sides computed the same maps


@pytest.mark.slow
def test_bench_tiny(tmp_path):
    sides = ["vitprobe float32", "vitprobe float32 keep_attention", "timm float32"]
    stdout, markdown, data = run_benchmark(
        "bench.py",
        tmp_path / "new" / "bench",
        "--arch",
        "vit_tiny_patch16_224",
        "--depth",
        "1",
        "--images",
        "6",
        "--batch",
        "2",
        "--runs",
        "1",
        "--sides",
        *sides,
    )
    assert markdown.strip() in stdout and "steady rate after the first batch" in markdown
    assert_names_cpu(data, markdown)
    rows = {row["side"]: row for row in data["rows"]}
    assert list(rows) == sides
    for row in rows.values():
        assert f"| {row['side']} |" in markdown
        assert row["img_s"] > 0 and row["startup_s"] > 0 and row["peak_rss_mb"] > 0 and row["steady_images"] == 4
        assert row["max_abs_distance_diff_px"] < 1e-3  # float32 vitprobe and timm compute the same distances
    assert rows["vitprobe float32 keep_attention"]["bytes_written"] > rows["vitprobe float32"]["bytes_written"] > 0
    assert rows["vitprobe float32 keep_attention"]["reduce_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("attribution", [True, False])
def test_pipeline_benchmark_tiny(tmp_path, attribution):
    stdout, markdown, data = run_benchmark(
        "pipeline.py",
        tmp_path / "new" / "pipeline",
        "--config",
        str(REPO / "config" / "demo.yaml"),
        "--depth",
        "1",
        "--images",
        "4",
        *([] if attribution else ["--no-attribution"]),
    )
    assert markdown.strip() in stdout and "| images | models |" in markdown
    assert_names_cpu(data, markdown)
    assert data["models"] == 2 and data["job_counts"]["extract"] == 2  # one shard per model
    # Read from the console's job lines (each rule's message) and their finishes.
    assert data["job_wall_seconds_by_rule"]["extract"] > 0 and "sample" in data["job_wall_seconds_by_rule"]
    assert [len(load) for load in data["load_average_1_5_15min_before_after"]] == [3, 3]
    for key in (
        "wall_s",
        "forward_sum_s",
        "wall_over_forward",
        "noop_dry_run_s",
        "figure_option_rerun_s",
        "extract_peak_rss_mb",
        "disk_mb",
    ):
        assert data[key] > 0, key
    assert "attribution" not in data["job_wall_seconds_by_rule"]
    if attribution:
        assert data["attribution_images"] == 2  # the demo's
        assert data["attribution_wall_s"] > 0 and data["attribution_job_wall_seconds_by_rule"]["attribution"] > 0
    else:  # not run, and the record says so
        assert data["attribution_images"] == 0 and data["attribution_wall_s"] is None
        assert (
            data["attribution_job_wall_seconds_by_rule"] == {}
            and "job_counts" in data
            and "attribution" not in data["job_counts"]
        )
        assert "not run (--no-attribution)" in markdown


@pytest.mark.slow
def test_backend_agreement_tiny(tmp_path):
    stdout, markdown, data = run_benchmark("backend_agreement.py", tmp_path / "new" / "agreement", "--images", "2")
    assert markdown.strip() in stdout and "| jax |" in markdown and "| torch |" in markdown
    assert_names_cpu(data, markdown)
    assert data["images"] == 2
    for backend in ("jax", "torch"):
        for value in data[backend].values():
            assert math.isfinite(value) and 0 <= value < 1e-3


def test_breakdown_tiny(tmp_path):
    stdout, markdown, data = run_benchmark(
        "breakdown.py", tmp_path / "new" / "breakdown", "--depth", "1", "--batch", "2", "--threads", "1", "--repeats", "1"
    )
    assert markdown.strip() in stdout
    assert_names_cpu(data, markdown)
    ms = data["ms_per_batch"]
    assert len(ms) == 5 and all(v > 0 for v in ms.values()) and data["matmul_gflop_s"] > 0
    whole, model, projections = (next(v for k, v in ms.items() if k.startswith(p)) for p in ("whole", "model", "projections"))
    assert data["derived_ms_per_batch"]["reductions and token norms in the program (whole - model alone)"] == whole - model
    # The floor replaces the measured projections by their time at the ceiling, nothing else.
    assert data["floor_ms"] == pytest.approx(whole - projections + data["projections_at_ceiling_ms"])
    assert data["floor_ratio_to_ceiling"] == pytest.approx(data["ceiling_ms"] / data["floor_ms"])


def test_shard_write_benchmark_tiny(tmp_path):
    """Both formats written in alternating pairs, every measure positive, the ratios those of the
    medians, and the CPU and load named."""
    out = tmp_path / "new" / "shard_write.json"
    command = [sys.executable, str(REPO / "benchmarks" / "shard_write.py"), "--images", "2", "--runs", "2"]
    result = subprocess.run([*command, "--dir", str(tmp_path), "--out", str(out)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["cpu"]["model"] and data["cpu"]["cores"] > 0 and len(data["load_average_1_5_15min_before_after"]) == 2
    for side in ("npy_plus_json_sidecar", "npz"):
        assert len(data[side]["runs_written_on_disk_cpu_s"]) == 2
        assert 0 < data[side]["median_written_s"] <= data[side]["median_on_disk_s"] and data[side]["written_GBps"] > 0
    ratio = data["npz"]["median_on_disk_s"] / data["npy_plus_json_sidecar"]["median_on_disk_s"]
    assert data["npz_over_npy_ratio_of_medians"]["on_disk"] == pytest.approx(ratio, abs=0.05)  # of the rounded medians
    assert set(data["npz_over_npy_median_of_paired_ratios"]) == {"written", "on_disk", "cpu"}
    assert list(tmp_path.iterdir()) == [tmp_path / "new"]  # the shards written were removed


def test_job_seconds_count_the_sample_checkpoint():
    """The sample job (a checkpoint) may be the first job in the log; each job starts at its message."""
    from pipeline import job_seconds_by_rule

    log = """
[Thu Nov 26 03:00:00 2026]
Job 3: sample, log: results/demo/logs/sample.log
[Thu Nov 26 03:00:01 2026]
Job 5: model_parameters m, log: results/demo/logs/parameters/m.log
[Thu Nov 26 03:00:04 2026]
Finished jobid: 3 (Rule: sample)
[Thu Nov 26 03:00:11 2026]
Finished jobid: 5 (Rule: model_parameters)
"""
    assert job_seconds_by_rule(log) == {"sample": 4.0, "model_parameters": 10.0}


@pytest.mark.slow
def test_paths_benchmark_tiny(tmp_path):
    """One run of one candidate beside timm and the matmul ceiling, on a one-block ViT-Ti; the
    machine's calibration is left alone (--no-save)."""
    stdout, markdown, data = run_benchmark(
        "paths.py",
        tmp_path / "new" / "paths",
        "--arch",
        "vit_tiny_patch16_224",
        "--depth",
        "1",
        "--batch",
        "2",
        "--runs",
        "1",
        "--batches",
        "1",
        "--precisions",
        "float32",
        "--candidates",
        "tensorflow:graph",
        "--no-save",
    )
    assert markdown.strip() in stdout and "at depth 1" in markdown
    assert data["cpu_model"] and data["cpu_model"] in markdown and data["cpu_count"] > 0
    assert data["spec_overrides"] == {"depth": 1} and data["macs_per_image"] > 0 and data["matmul_gflop_s"] > 0
    rows = {row["path"]: row for row in data["rows"]}
    assert rows["tensorflow graph"]["img_s"] > 0 and rows["tensorflow graph"]["ratio_to_ceiling"] > 0
    assert [path for path in rows if path.startswith("timm")] and all(row["img_s"] > 0 for row in rows.values())


@pytest.mark.slow
def test_cka_group_size_tiny(tmp_path):
    """Eight crops, two orderings: a row per feature kind and group size; one group of all the
    images has one ordering and no spread, and the mean CKA (diagonal included) is at most 1."""
    stdout, markdown, data = run_benchmark(
        "cka_group_size.py", tmp_path / "new" / "cka", "--images", "8", "--orderings", "2", "--groups", "4", "8"
    )
    assert markdown.strip() in stdout
    assert_names_cpu(data, markdown)
    assert [(r["features"], r["group_size"]) for r in data["rows"]] == [("tokens", 4), ("tokens", 8), ("cls", 4), ("cls", 8)]
    for row in data["rows"]:
        assert f"| {row['features']} | {row['group_size']} |" in markdown
        assert math.isfinite(row["mean_cka"]) and 0 < row["mean_cka"] <= 1 + 1e-9 and row["max_std"] >= row["mean_std"] >= 0
        assert row["orderings"] == (1 if row["group_size"] == 8 else 2)
        if row["group_size"] == 8:
            assert row["max_std"] == 0


@pytest.mark.slow
def test_flip_detection_benchmark(tmp_path):
    stdout, markdown, data = run_benchmark("flip_detection.py", tmp_path / "new" / "flips")
    assert markdown.strip() in stdout and "| file and check |" in markdown
    assert_names_cpu(data, markdown)
    results = data["results"]
    for name in (".npz, zip CRC-32 of every member", "Parquet, content digest in its metadata"):
        counts = results[name]
        assert counts["other data"] == 0, name  # what the pipeline's checks promise
        assert counts["refused"] + counts["same data"] == counts["bytes"] > 0, name

"""Whole-pipeline benchmark: the paper experiment's five architectures (seeded random weights:
the weights do not change the cost) on N photos, run by ``snakemake --cores C``.

Records the wall time of the full run against the sum of the five models' pure forward-pass
times over the same images (logits only, steady state, each model alone on all cores, the
same batch size), the time of a no-op ``snakemake -n`` on the finished run, the time
of a rerun after changing one figure option, the peak RSS of the extract jobs and the disk
the run left, with the CPU model and its AVX/AMX flags. Prints the Markdown table, then writes
<out>/<date>-<host>-<machine>-pipeline.json and .md (--out: benchmarks/records/ by default).

``--config`` and ``--depth`` run another experiment's models (random weights) or shallower ones,
for a quick check that the script works. ``--no-attribution`` leaves the attribution stage out (its
cost does not depend on the photo count: ``attribution.images`` per model).

Usage: python benchmarks/pipeline.py [--images 1000] [--cores 2] [--config config.yaml] [--depth N] [--no-attribution]
       [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from record import RECORDS, cpu_info, describe_cpu, record
from snakemake.utils import validate

from vitprobe.pipeline.config import SCHEMA, validated_entries

REPO = Path(__file__).resolve().parents[1]

FORWARD_SIDE = r"""
import json, sys, time
from vitprobe.pipeline.threads import limit_threads
args = json.loads(sys.argv[1])
limit_threads(args["threads"])
import keras, numpy as np
from vitprobe.compiled import compile_for_backend
from vitprobe.pipeline.config import validated_entries
from vitprobe.pipeline.model import build_model


class Logits(keras.Model):
    def __init__(self, vit):
        super().__init__(name="logits")
        self.vit = vit

    def call(self, x):
        out = self.vit(x)  # a model without a head (DINO): its last attention, summed
        return out["logits"] if "logits" in out else keras.ops.sum(out["attentions"][-1], axis=(1, 2, 3))


seconds = {}
for key, entry in validated_entries(args["models"]).items():
    model = build_model(entry, args["precision"])
    program = Logits(model.keras_model)
    compile_for_backend(program)
    batch = np.random.default_rng(0).random((args["batch"], model.image_size, model.image_size, 3), np.float32)
    program.predict_on_batch(batch)  # compile
    batches = -(-args["images"] // args["batch"])
    start = time.perf_counter()
    for _ in range(batches):
        program.predict_on_batch(batch)
    seconds[key] = time.perf_counter() - start
print(json.dumps(seconds))
"""


def make_photos(folder: Path, count: int) -> None:
    """``count`` JPEGs cut from the bundled photos: random crops and sizes like ImageNet's."""
    from PIL import Image

    from vitprobe.data import sources

    photos = [Image.open(io.BytesIO(r.read())).convert("RGB") for r in sources.bundled()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1)), int(h * rng.uniform(0.6, 1))
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        image = photo.crop((x, y, x + cw, y + ch)).resize((int(rng.integers(300, 500)), int(rng.integers(300, 500))))
        image.save(folder / f"photo_{i:05d}.jpg", quality=90)


def snakemake(workdir: Path, *args: str) -> tuple[float, str]:
    """Wall seconds and Snakemake's log."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    return time.perf_counter() - start, result.stdout + result.stderr


def job_seconds_by_rule(log: str) -> dict[str, float]:
    """Summed wall seconds of each rule's jobs, from the timestamps of Snakemake's log: a job
    starts at its "Job <id>: <message>" line (every rule has a message) and its finish names its rule."""
    stamp, started, total = None, {}, {}
    for line in log.splitlines():
        if m := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line.strip()):
            stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"Job (\d+): ", line.strip()):
            started[m.group(1)] = stamp
        elif m := re.match(r"Finished jobid: (\d+) \(Rule: (\w+)\)", line.strip()):
            job, rule = m.groups()
            if job in started:
                total[rule] = total.get(rule, 0.0) + (stamp - started[job]).total_seconds()
    return total


def resolved_shard_size(log: str, configured: int | str) -> int | str:
    """The images per extract job: as configured, or what ``auto`` resolved to (the run's log says)."""
    if m := re.search(r"extract\.shard_size: (\d+) images per extract job", log):
        return int(m.group(1))
    return configured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the experiment whose models run (random weights)")
    parser.add_argument("--depth", type=int, default=None, help="blocks of every model (default: each arch's)")
    parser.add_argument(
        "--attribution", action=argparse.BooleanOptionalAction, default=True, help="run the attribution stage after the rest"
    )
    parser.add_argument("--out", default=str(RECORDS), help="folder for the .json and .md (created)")
    args = parser.parse_args()
    paper = yaml.safe_load(Path(args.config).read_text())
    spec = {"spec": {"depth": args.depth}} if args.depth else {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "weights.lock.json"):
            shutil.copy(REPO / name, work / name)
        for name in ("workflow", "src", "envs", "profiles"):
            shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        make_photos(work / "photos", args.images)
        config = dict(
            paper, experiment="bench", images={"source": "folder", "path": str(work / "photos"), "count": args.images, "seed": 0}
        )
        archs = {key: e.arch for key, e in validated_entries(paper["models"]).items()}  # presets resolved
        config["models"] = {key: {"arch": arch, "weights": "random", **spec} for key, arch in archs.items()}
        if args.depth:  # the config's explorer blocks may not exist at this depth: show them all
            config["explorer"] = dict(config.get("explorer") or {}, blocks=None)
        validate(config, str(SCHEMA))  # fills in the schema's defaults
        (work / "bench.yaml").write_text(yaml.safe_dump(config))
        extract = config["extract"]
        # The yardstick: each model alone on every core, as fast as one forward pass can go here.
        forward_job = {
            "models": config["models"],
            "images": args.images,
            "batch": extract["batch_size"],
            "precision": extract["precision"],
            "threads": args.cores,
        }
        result = subprocess.run([sys.executable, "-c", FORWARD_SIDE, json.dumps(forward_job)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(result.stderr[-3000:])
        forward = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"forward passes: {forward}", file=sys.stderr)
        # Every stage but attribution first, then the attribution stage alone: a rerun with it on,
        # which runs its jobs and nothing else, so its cost is its own line.
        without = dict(config, attribution={**config["attribution"], "images": 0})
        (work / "without_attribution.yaml").write_text(yaml.safe_dump(without))
        wall, log = snakemake(work, "--cores", str(args.cores), "--configfile", "without_attribution.yaml")
        final = config if args.attribution else without
        run = ["--cores", str(args.cores), "--configfile", "bench.yaml" if args.attribution else "without_attribution.yaml"]
        attribution_wall, attribution_log = snakemake(work, *run) if args.attribution else (None, "")
        noop, _ = snakemake(work, "-n", *run)
        changed = dict(final, figures={**config["figures"], "filters": 64})
        (work / "changed.yaml").write_text(yaml.safe_dump(changed))
        figure_rerun, _ = snakemake(work, "--cores", str(args.cores), "--configfile", "changed.yaml")
        out = work / "results" / "bench"
        jobs = pd.concat(
            [pd.read_csv(p, sep="\t").assign(rule=p.parent.name) for p in (out / "benchmarks").rglob("*.tsv")], ignore_index=True
        )
        disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    cpu = cpu_info()
    summary = {
        **cpu,
        "images": args.images,
        "cores": args.cores,
        "models": len(config["models"]),
        "shard_size": resolved_shard_size(log, extract["shard_size"]),
        "batch_size": extract["batch_size"],
        "extract_threads": extract["threads"],
        "precision": forward_job["precision"],
        "wall_s": round(wall, 1),
        "forward_sum_s": round(sum(forward.values()), 3),  # milliseconds: a quick check's passes are short
        "wall_over_forward": round(wall / sum(forward.values()), 3),
        "attribution_images": final["attribution"]["images"],
        "attribution_wall_s": round(attribution_wall, 1) if args.attribution else None,
        "attribution_job_wall_seconds_by_rule": {k: round(v, 1) for k, v in sorted(job_seconds_by_rule(attribution_log).items())},
        "noop_dry_run_s": round(noop, 2),
        "figure_option_rerun_s": round(figure_rerun, 1),
        "extract_peak_rss_mb": round(float(jobs.loc[jobs["rule"] == "extract", "max_rss"].max())),
        "disk_mb": round(disk / 2**20, 1),
        "load_average_1_5_15min_before_after": [[round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]],
        "job_wall_seconds_by_rule": {k: round(v, 1) for k, v in sorted(job_seconds_by_rule(log).items())},
        "job_counts": {k: int(v) for k, v in jobs.groupby("rule").size().items()},
        "forward_s_by_model": {k: round(v, 1) for k, v in forward.items()},
    }
    stem = f"{datetime.date.today()}-{socket.gethostname()}-{platform.machine()}-pipeline"
    depth = f" at depth {args.depth}" if args.depth else ""
    markdown = "\n".join(
        [
            f"{Path(args.config).name}'s {summary['models']} models{depth} (random weights), CPU: {describe_cpu(cpu)}.",
            "",
            (
                "| images | models | cores | wall (s) | sum of forward passes (s) | wall / forward | no-op `snakemake -n` (s) "
                "| figure-option rerun (s) | extract peak RSS (MB) | disk (MB) |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
            (
                f"| {args.images} | {summary['models']} | {args.cores} | {summary['wall_s']} | {summary['forward_sum_s']} "
                f"| {summary['wall_over_forward']} | {summary['noop_dry_run_s']} | {summary['figure_option_rerun_s']} "
                f"| {summary['extract_peak_rss_mb']} | {summary['disk_mb']} |"
            ),
            "",
            f"Job wall seconds by rule (jobs overlap on {args.cores} cores): {summary['job_wall_seconds_by_rule']}",
            "",
            (
                f"The attribution stage ({summary['attribution_images']} images per model), run after the rest: "
                f"{summary['attribution_wall_s']} s of wall; job wall seconds by rule: "
                f"{summary['attribution_job_wall_seconds_by_rule']}"
                if args.attribution
                else "The attribution stage was not run (--no-attribution)."
            ),
            "",
            f"1-, 5- and 15-minute load average before and after: {summary['load_average_1_5_15min_before_after']}.",
        ]
    )
    record(args.out, stem, markdown, summary)


if __name__ == "__main__":
    main()

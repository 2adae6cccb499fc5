"""Which compiled path runs the extract program fastest on this machine, found by measurement.

The same program runs at different speeds through different compilers, and the ranking changes
with the CPU: on an AMD EPYC with AVX2 only, XLA ran ViT-B/16 in float32 at 3.05 img/s against
2.84 for TensorFlow's graph; on an Intel Xeon with AMX only the graph reaches oneDNN's bfloat16
kernels. So `measure` times each candidate path (a Keras backend and one of its compile modes,
`CANDIDATES`) on the real extract program (`ProbeModel.forward_reduced`, seeded random weights:
weights do not change the cost), each run in its own process (the backend is fixed when Keras
is first imported), alternating the candidates over repeats (in a rotated order) so drift on a
shared machine hits them all. `choose_compile_mode` then picks, for an extract job, the compile mode of the running
backend with the shortest expected job time (compile + images / img/s) at the job's precision:
a bfloat16 candidate never stands in for float32.

The record lives in a per-machine cache,
``$VITPROBE_CACHE/calibration/<cpu model>-<flags hash>/<arch>_b<batch>_t<threads>.json``, rather
than in a workflow rule's output: the answer belongs to the machine, not to an experiment, so it
is measured once and reused by every experiment; on a cluster with a shared home each node finds
its own CPU's record; a re-measurement never becomes a changed input that reruns every
extraction; and no experiment waits for it. Without a record the backend's default runs (the
job's log says so and how to calibrate).

Only the running backend's compile modes are chosen automatically; other backends' numbers are
recorded and named in the log. Switching the backend per job would change which library computes
every number of a run and would have to happen before Keras is imported (and on the CPUs
measured so far the other backends were slower: jax 1.30 against 3.05 img/s on the EPYC).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text
from ..backends import compile_modes
from ..environment import cache_dir
from ..hardware import cpu_flags, cpu_model, machine_key

# (backend, compile mode); see `vitprobe.backends.COMPILE_MODES`.
CANDIDATES = (("tensorflow", "graph"), ("tensorflow", "xla"), ("jax", "jit"), ("torch", "eager"))
HOW_TO_CALIBRATE = "python -m vitprobe.pipeline.calibration --arch {arch} --batch {batch} --threads {threads}"


class CalibrationError(ValueError):
    """A calibration record that cannot be used (unreadable, malformed, or for other settings)."""


@dataclass(frozen=True)
class Choice:
    """A compile mode and why it was taken; ``warning`` when a record was there but unusable."""

    mode: str
    reason: str
    warning: bool = False


def record_path(arch: str, batch_size: int, threads: int, spec_overrides: dict | None = None, cpuinfo: str | None = None) -> Path:
    """Where this machine's calibration of ``arch`` (with ``spec_overrides``, a config entry's
    ``spec``: a hash of them joins the name) at ``batch_size`` and ``threads`` lives."""
    name = arch
    if spec_overrides:
        name += "-" + hashlib.sha256(json.dumps(spec_overrides, sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "calibration" / machine_key(cpuinfo) / f"{name}_b{batch_size}_t{threads}.json"


def runtime_versions(backend: str) -> dict[str, str]:
    """Keras' and the backend library's versions in this process (both imported by then)."""
    import importlib

    import keras

    return {"keras": keras.__version__, backend: importlib.import_module(backend).__version__}


# --- measuring ------------------------------------------------------------------------------


def time_candidate(arch: str, batch_size: int, precision: str, compile_mode: str, batches: int, spec_overrides: dict) -> dict:
    """In this process (its backend): build ``arch`` with seeded random weights, run one batch
    (trace and compile), then time ``batches`` more of `ProbeModel.forward_reduced`. The import
    of Keras and its backend is timed too: it is part of every extract job's start-up."""
    started = time.perf_counter()
    import keras
    import numpy as np

    from ..api import load_model

    imported = time.perf_counter()
    model = load_model(arch, precision=precision, compile_mode=compile_mode, **spec_overrides)
    x = np.random.default_rng(0).normal(size=(batch_size, model.image_size, model.image_size, 3)).astype(np.float32)
    built = time.perf_counter()
    model.forward_reduced(x)
    first = time.perf_counter() - built
    seconds = []
    for _ in range(batches):
        t = time.perf_counter()
        model.forward_reduced(x)
        seconds.append(time.perf_counter() - t)
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "compile": compile_mode,
        "precision": precision,
        "versions": runtime_versions(backend),
        "import_s": imported - started,
        "build_s": built - imported,
        "first_batch_s": first,
        "seconds_per_batch": seconds,
    }


_CHILD = """
import json, sys
from vitprobe.pipeline.threads import limit_threads
args = json.loads(sys.argv[1])
limit_threads(args.pop("threads"))
from vitprobe.pipeline.calibration import time_candidate
print(json.dumps(time_candidate(**args)))
"""


def run_candidate(backend: str, compile_mode: str, threads: int, **args) -> dict:
    """`time_candidate` in a fresh process with ``KERAS_BACKEND=backend`` and ``threads`` threads.
    Raises RuntimeError with the end of its stderr when it fails (a backend not installed, a
    compiler that rejects the program)."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    payload = json.dumps({"compile_mode": compile_mode, "threads": threads, **args})
    out = subprocess.run([sys.executable, "-c", _CHILD, payload], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{backend} {compile_mode}: exit {out.returncode}: {out.stderr[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """One candidate's runs -> its record: img/s (median over runs of batch / median batch time),
    compile seconds (first batch minus a steady one) and every batch time."""
    batch = runs[0]["batch_size"]
    rates = [batch / statistics.median(r["seconds_per_batch"]) for r in runs]
    compile_s = [r["first_batch_s"] - statistics.median(r["seconds_per_batch"]) for r in runs]
    keep = ("backend", "compile", "precision", "versions")
    return {
        **{k: runs[0][k] for k in keep},
        "img_s": round(statistics.median(rates), 3),
        "compile_s": round(max(statistics.median(compile_s), 0.0), 2),
        "import_s": round(statistics.median(r["import_s"] for r in runs), 2),
        "build_s": round(statistics.median(r["build_s"] for r in runs), 2),
        "img_s_runs": [round(r, 3) for r in rates],
        "seconds_per_batch": [[round(s, 4) for s in r["seconds_per_batch"]] for r in runs],
    }


def measure(
    arch: str,
    batch_size: int,
    threads: int,
    *,
    precisions=("float32",),
    candidates=CANDIDATES,
    repeats: int = 3,
    batches: int = 3,
    spec_overrides: dict | None = None,
    progress=None,
    after_repeat=None,
) -> dict:
    """Time every candidate at every precision, ``repeats`` times in alternation, each run in its
    own process. A candidate whose first run fails is recorded with its error and not retried.

    Args:
        arch: a name `vitprobe.get_spec` resolves.
        batch_size: images per batch (the extract job's ``extract.batch_size``).
        threads: threads per process (the extract job's ``extract.threads``).
        precisions: ``"float32"`` and/or ``"bfloat16"``.
        candidates: (backend, compile mode) pairs, from `CANDIDATES`.
        repeats: runs of each candidate.
        batches: timed batches per run, after the first.
        spec_overrides: `ViTSpec` fields to change (a tiny model for tests: ``{"depth": 1}``).
        progress: called with one line per finished run (default: stderr).
        after_repeat: called with the repeat's index after each repeat (a benchmark's other sides,
            so that they alternate with the candidates too).
    """
    progress = progress or (lambda line: print(line, file=sys.stderr))
    keys = [(b, m, p) for b, m in candidates for p in precisions]
    runs: dict[tuple, list[dict]] = {k: [] for k in keys}
    errors: dict[tuple, str] = {}
    load = [os.getloadavg()[0]]
    for repeat in range(repeats):
        shift = repeat % len(keys)  # a rotated order: no candidate always runs first in a round
        for backend, mode, precision in keys[shift:] + keys[:shift]:
            if (backend, mode, precision) in errors:
                continue
            try:
                result = run_candidate(
                    backend,
                    mode,
                    threads,
                    arch=arch,
                    batch_size=batch_size,
                    precision=precision,
                    batches=batches,
                    spec_overrides=spec_overrides or {},
                )
            except RuntimeError as e:
                errors[(backend, mode, precision)] = str(e)
                progress(f"{backend} {mode} {precision}: failed ({str(e).strip().splitlines()[-1]})")
                continue
            runs[(backend, mode, precision)].append({**result, "batch_size": batch_size})
            progress(
                f"run {repeat + 1}/{repeats} {backend} {mode} {precision}: "
                f"{batch_size / statistics.median(result['seconds_per_batch']):.2f} img/s"
            )
        if after_repeat:
            after_repeat(repeat)
        load.append(os.getloadavg()[0])
    rows = [
        summarise(runs[k])
        if runs[k]
        else {"backend": k[0], "compile": k[1], "precision": k[2], "img_s": None, "error": errors.get(k, "no run")}
        for k in keys
    ]
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": sorted(cpu_flags()),
        "machine": machine_key(),
        "arch": arch,
        "batch_size": batch_size,
        "threads": threads,
        "spec_overrides": spec_overrides or {},
        "repeats": repeats,
        "batches": batches,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average_1min": [round(x, 2) for x in load],
        "candidates": rows,
    }


def save(record: dict, path: str | os.PathLike) -> None:
    """Write ``record``, keeping the candidates of an earlier record at ``path`` that this one did
    not measure (a bfloat16 calibration added to a float32 one)."""
    path = Path(path)
    merged = dict(record)
    try:
        earlier = load_record(path) if path.exists() else None
    except CalibrationError:
        earlier = None  # replaced by the new measurement
    if earlier:
        measured = {(c["backend"], c["compile"], c["precision"]) for c in record["candidates"]}
        kept = [c for c in earlier["candidates"] if (c["backend"], c["compile"], c["precision"]) not in measured]
        merged["candidates"] = kept + record["candidates"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(merged, indent=2) + "\n")


# --- choosing -------------------------------------------------------------------------------


def load_record(path: str | os.PathLike) -> dict:
    """Read a calibration record; `CalibrationError` naming the file when it is not one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CalibrationError(f"{path}: not a readable calibration record ({e})") from e
    candidates = record.get("candidates") if isinstance(record, dict) else None
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise CalibrationError(f"{path}: no 'candidates' list")
    for c in candidates:
        if not all(isinstance(c.get(k), str) for k in ("backend", "compile", "precision")):
            raise CalibrationError(f"{path}: a candidate without backend, compile and precision: {c}")
        if c.get("img_s") is not None and not (isinstance(c["img_s"], (int, float)) and c["img_s"] > 0):
            raise CalibrationError(f"{path}: {c['backend']} {c['compile']} has img_s {c['img_s']!r}")
    return record


def _describe(c: dict) -> str:
    return f"{c['compile']} {c['img_s']:.2f} img/s + {c.get('compile_s', 0.0):.1f} s compile"


def select(record: dict, backend: str, precision: str, images: int, versions: dict[str, str]) -> tuple[str | None, str]:
    """The compile mode of ``backend`` with the shortest expected time for ``images`` images
    (compile + images / img/s) among ``record``'s candidates at ``precision`` measured under
    ``versions``; (None, why) when there is none."""
    same = [c for c in record["candidates"] if c["backend"] == backend and c["precision"] == precision and c.get("img_s")]
    if not same:
        return None, f"it has no {backend} {precision} measurement"
    current = [c for c in same if c.get("versions") == versions]
    if not current:
        return None, f"it was measured under {same[0].get('versions')}, this job runs {versions}"
    best = min(current, key=lambda c: c.get("compile_s", 0.0) + images / c["img_s"])
    others = sorted(
        (c for c in record["candidates"] if c["backend"] != backend and c["precision"] == precision and c.get("img_s")),
        key=lambda c: -c["img_s"],
    )
    why = (
        f"fastest for {images} images at {precision} on {record.get('cpu_model', '?')} (calibrated {record.get('date', '?')}, "
        f"threads {record.get('threads', '?')}): " + ", ".join(_describe(c) for c in sorted(current, key=lambda c: -c["img_s"]))
    )
    if others:
        why += "; other backends (KERAS_BACKEND, not switched automatically): " + ", ".join(
            f"{c['backend']} {c['compile']} {c['img_s']:.2f} img/s" for c in others
        )
    return best["compile"], why


def choose_compile_mode(
    choice: str,
    *,
    arch: str,
    batch_size: int,
    threads: int,
    precision: str,
    images: int,
    spec_overrides: dict | None = None,
    backend: str | None = None,
    path: str | os.PathLike | None = None,
) -> Choice:
    """Resolve ``extract.compile`` for one extract job: an explicit mode as given (checked against
    the backend); ``"auto"`` from this machine's calibration record (`select`), else the backend's
    default with the reason in `Choice.reason`.

    Args:
        choice: ``"auto"`` or a compile mode of the running backend (`vitprobe.backends.COMPILE_MODES`).
        arch: the model's architecture (a name `vitprobe.get_spec` resolves).
        batch_size: the job's batch size.
        threads: the job's threads.
        precision: the job's precision; only candidates measured at it count.
        images: images in the job (weighs compile time against throughput).
        spec_overrides: the model's `ViTSpec` overrides (part of the record's name).
        backend: the Keras backend (default: the running one).
        path: the record to read (default: `record_path`).
    """
    import keras

    backend = backend or keras.backend.backend()
    modes = compile_modes(backend)
    if choice != "auto":
        if choice not in modes:
            raise ValueError(
                f"extract.compile: {choice!r} is not a compile mode of the {backend} backend ({', '.join(modes)}); "
                "use auto or one of those"
            )
        return Choice(choice, "set by extract.compile")
    default = modes[0]
    path = Path(path or record_path(arch, batch_size, threads, spec_overrides))
    how = HOW_TO_CALIBRATE.format(arch=arch, batch=batch_size, threads=threads)
    if spec_overrides:
        how += f" --spec '{json.dumps(spec_overrides, sort_keys=True)}'"
    if not path.exists():
        return Choice(default, f"the {backend} default: no calibration of this machine at {path}; measure with `{how}`")
    try:
        record = load_record(path)
    except CalibrationError as e:
        return Choice(default, f"the {backend} default: {e}; remeasure with `{how}`", warning=True)
    mode, why = select(record, backend, precision, images, runtime_versions(backend))
    if mode is None:
        return Choice(default, f"the {backend} default: {path} is unusable here ({why}); remeasure with `{how}`", warning=True)
    return Choice(mode, why)


def main(argv: list[str] | None = None) -> None:
    """``python -m vitprobe.pipeline.calibration``: measure this machine and store the record where the
    extract jobs look for it."""
    import argparse

    parser = argparse.ArgumentParser(description="Measure each compiled path of the extract program on this machine.")
    parser.add_argument("--arch", required=True, help="architecture, a timm name that vitprobe.get_spec resolves")
    parser.add_argument("--batch", type=int, default=8, help="the extract job's batch size (extract.batch_size)")
    parser.add_argument("--threads", type=int, default=1, help="the extract job's threads (extract.threads)")
    parser.add_argument("--spec", type=json.loads, default={}, help="the config entry's spec overrides, as JSON")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per run")
    parser.add_argument("--candidates", nargs="+", default=[f"{b}:{m}" for b, m in CANDIDATES], help="backend:mode pairs")
    args = parser.parse_args(argv)
    candidates = [tuple(c.split(":", 1)) for c in args.candidates]
    record = measure(
        args.arch,
        args.batch,
        args.threads,
        precisions=args.precision,
        candidates=candidates,
        repeats=args.repeats,
        batches=args.batches,
        spec_overrides=args.spec,
    )
    path = record_path(args.arch, args.batch, args.threads, args.spec)
    save(record, path)
    for c in record["candidates"]:
        print(
            f"{c['backend']} {c['compile']} {c['precision']}: "
            + (f"{c['img_s']:.2f} img/s, compile {c['compile_s']:.1f} s" if c["img_s"] else f"failed: {c['error'][-200:]}")
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

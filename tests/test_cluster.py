"""The shipped profiles: each parses (dry run); the demo run through a real one-node SLURM
cluster (started here, see slurm_cluster.py) equals a local run bit for bit; the
cluster-generic profile's submit/status/cancel scripts keep their protocol."""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import REPO, SNAKEMAKE, copy_workflow, wait_while_progressing
from slurm_cluster import SlurmCluster

PROFILES = ["local", "slurm", "cluster-generic"]
TABLES = ["manifest", "rejected", "mean_attention_distance", "attention_distance_per_image", "predictions"]
SLURM_PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
GENERIC = REPO / "profiles" / "cluster-generic"


def demo_workdir(dest: Path, attribution: dict | None = None) -> Path:
    """The demo in ``dest``; ``attribution`` overrides its attribution settings."""
    dest.mkdir(parents=True, exist_ok=True)
    copy_workflow(dest)
    (dest / "config").mkdir()
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["attribution"].update(attribution or {})
    (dest / "config" / "demo.yaml").write_text(yaml.safe_dump(demo, sort_keys=False))
    shutil.copytree(REPO / "profiles", dest / "profiles", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return dest


def workflow_env(workdir: Path, base: dict | None = None) -> dict:
    return {**(base or os.environ), "VITPROBE_WEIGHTS_LOCK": str(workdir / "weights.lock.json"), "HF_HUB_OFFLINE": "1"}


# -- every profile parses ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dry_run_dir(tmp_path_factory):
    return demo_workdir(tmp_path_factory.mktemp("profiles"))


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_dry_run(dry_run_dir, profile):
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--profile", f"profiles/{profile}", "--configfile", "config/demo.yaml"],
        cwd=dry_run_dir,
        capture_output=True,
        text=True,
        env=workflow_env(dry_run_dir),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert f"Using profiles profiles/{profile}" in out
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", out.split("Job stats:")[1], flags=re.M))
    assert jobs.get("sample") == "1" and jobs.get("model_parameters") == "2", out[-3000:]


# -- the demo through SLURM equals a local run --------------------------------------------------


def start(workdir: Path, args: list[str], env: dict, name: str) -> tuple[subprocess.Popen, Path]:
    log = workdir / f"{name}.log"
    with open(log, "w") as f:
        process = subprocess.Popen(
            [*SNAKEMAKE, *args], cwd=workdir, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return process, log


def finish(process: subprocess.Popen, log: Path, what: str, stall: float = 900.0) -> str:
    """Wait for a run while it makes progress (its log or results change; no fixed budget: issue
    23 saw a 400 s limit kill a loaded machine's run at 70%); a run silent for ``stall`` s is stopped."""
    if not wait_while_progressing(process, [log, log.parent / "results"], stall):
        os.killpg(process.pid, signal.SIGTERM)  # snakemake cancels its SLURM jobs on SIGTERM
        process.wait(30)
        raise AssertionError(f"{what} made no progress for {stall} s:\n{log.read_text()[-6000:]}")
    text = log.read_text()
    if process.returncode:
        # A failed SLURM job's own output (kept by the plugin) names the cause.
        job_logs = sorted((log.parent / ".snakemake" / "slurm_logs").rglob("*.log"))[:4]
        tails = "".join(f"\n--- {p.relative_to(log.parent)}\n" + "\n".join(p.read_text().splitlines()[-12:]) for p in job_logs)
        raise AssertionError(f"{what} failed:\n{text[-6000:]}{tails}")
    return text


def assert_same_results(local: Path, remote: Path) -> None:
    """Every table, shard table and map array equal bit for bit (no tolerance)."""
    for table in TABLES:
        a, b = pd.read_parquet(local / f"{table}.parquet"), pd.read_parquet(remote / f"{table}.parquet")
        assert list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes), table
        if not a.equals(b):
            report = []
            for column in a.columns:
                same = a[column].to_numpy() == b[column].to_numpy()
                if not same.all():
                    detail = f"{column}: {(~same).sum()} of {len(same)} values differ"
                    if pd.api.types.is_numeric_dtype(a[column]):
                        detail += f", max |diff| {np.max(np.abs(a[column].to_numpy(float) - b[column].to_numpy(float))):.3g}"
                    report.append(detail)
            raise AssertionError(f"{table}.parquet differs between the local and the SLURM run: {report}")
    shard_files = sorted(p.relative_to(local) for p in (local / "shards").rglob("*.parquet"))
    assert shard_files == sorted(p.relative_to(remote) for p in (remote / "shards").rglob("*.parquet"))
    for path in shard_files:
        assert pd.read_parquet(local / path).equals(pd.read_parquet(remote / path)), path
    maps = sorted(p.relative_to(local) for p in local.rglob("*.npz"))
    assert maps and maps == sorted(p.relative_to(remote) for p in remote.rglob("*.npz"))
    for path in maps:
        with np.load(local / path) as a, np.load(remote / path) as b:
            assert sorted(a.files) == sorted(b.files), path
            for key in a.files:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), f"{path}:{key}"
    assert sorted(p.name for p in (local / "figures").iterdir()) == sorted(p.name for p in (remote / "figures").iterdir())


def rule_of(comment: str, rules: set[str]) -> str:
    """The plugin names each job rule_<rule>[_wildcards_<values>] (sbatch --comment)."""
    matches = [r for r in rules if comment == f"rule_{r}" or comment.startswith(f"rule_{r}_wildcards_")]
    assert matches, f"SLURM job comment {comment!r} names no rule of {sorted(rules)}"
    return max(matches, key=len)


@pytest.mark.slow
def test_demo_through_slurm_equals_local_run(tmp_path):
    partition = SLURM_PROFILE["default-resources"]["slurm_partition"]
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    extract_mem_mb = schema["properties"]["extract"]["properties"]["mem_mb"]["default"]
    extract_threads = schema["properties"]["extract"]["properties"]["threads"]["default"]
    # Every rule runs; the attribution stage on one image in few steps (its numbers are tested
    # elsewhere), so the two runs cost little more than the stages before it.
    fewer = {"images": 1, "steps": 2}
    local_dir = demo_workdir(tmp_path / "local", fewer)
    slurm_dir = demo_workdir(tmp_path / "slurm", fewer)

    with SlurmCluster(partition=partition, keep_logs_in=tmp_path / "slurm-logs") as cluster:
        threads = min(2, cluster.hardware["CPUs"])
        # Both runs at once: the SLURM run mostly waits on status polls, and results must
        # not depend on what else the machine does.
        runs = []
        try:
            runs.append(
                local := start(
                    local_dir, ["--cores", str(threads), "--configfile", "config/demo.yaml"], workflow_env(local_dir), "local"
                )
            )
            runs.append(
                remote := start(
                    slurm_dir,
                    [
                        "--profile",
                        "profiles/slurm",
                        "--configfile",
                        "config/demo.yaml",
                        # This one-node cluster: no job takes more CPUs than the local run allows, no
                        # accounting database (job states from squeue), fast status polls.
                        "--max-threads",
                        str(threads),
                        "--slurm-status-command",
                        "squeue",
                        "--slurm-init-seconds-before-status-checks",
                        "1",
                    ],
                    cluster.env(workflow_env(slurm_dir)),
                    "slurm",
                )
            )
            local_log = finish(*local, "the local run")
            slurm_log = finish(*remote, "the SLURM run")
        finally:
            for process, _ in runs:  # a failed assertion leaves no snakemake behind
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(60)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
        jobs, jobcomp = cluster.jobs(), cluster.jobcomp.read_text()

    # Every job went through SLURM, once, with the rule's resources.
    run_id = re.search(r"SLURM run ID: (\S+)", slurm_log).group(1)
    ours = [j for j in jobs if j["name"] == run_id]
    executed = collections.Counter(re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", local_log, flags=re.M))
    executed.pop("all", None)  # the target rule has no action; the SLURM run does it in-process
    executed.pop("outputs", None)  # a localrule (it lists the results): it runs on the submitting host
    assert ours and {j["state"] for j in ours} == {"COMPLETED"}, ours
    submitted = collections.Counter(rule_of(j["comment"], set(executed)) for j in ours)
    assert submitted == executed, f"SLURM jobs per rule {dict(submitted)} != local jobs {dict(executed)}"
    assert len(re.findall(rf"Name={re.escape(run_id)} .*?JobState=COMPLETED", jobcomp)) == len(ours)
    assert {j["partition"] for j in ours} == {partition}
    extract = [j for j in ours if j["comment"].startswith("rule_extract_")]
    assert extract and all(  # the rule's threads, mem_mb and runtime (60 min) became sbatch -c, --mem, -t
        (j["cpus"], j["min_memory"], j["time_limit"]) == (str(min(extract_threads, threads)), f"{extract_mem_mb}M", "1:00:00")
        for j in extract
    ), extract

    assert_same_results(local_dir / "results" / "demo", slurm_dir / "results" / "demo")


# -- the cluster-generic profile's scripts ------------------------------------------------------


def generic(script: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([str(GENERIC / script), *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_status(job_id: str, cwd: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (state := generic("status.py", job_id, cwd=cwd)) == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def test_cluster_generic_scripts(tmp_path):
    properties = {"rule": "extract", "threads": 2, "resources": {"mem_mb": 4000, "runtime": 60}}

    def jobscript(name: str, body: str) -> Path:
        path = tmp_path / f"{name}.sh"
        path.write_text(f"#!/bin/sh\n# properties = {json.dumps(properties)}\n{body}\n")
        return path

    ok = generic("submit.py", str(jobscript("ok", "echo done > ok.txt")), cwd=tmp_path)
    failing = generic("submit.py", str(jobscript("failing", "exit 3")), cwd=tmp_path)
    sleeping = generic("submit.py", str(jobscript("sleeping", "sleep 300")), cwd=tmp_path)
    assert len({ok, failing, sleeping}) == 3 and all(i.startswith("extract-") for i in (ok, failing, sleeping))

    assert wait_status(ok, tmp_path) == "success" and (tmp_path / "ok.txt").read_text() == "done\n"
    assert wait_status(failing, tmp_path) == "failed"
    record = json.loads((tmp_path / ".snakemake" / "cluster-generic" / sleeping / "job.json").read_text())
    assert (record["rule"], record["threads"], record["resources"]) == ("extract", 2, {"mem_mb": 4000, "runtime": 60})
    assert generic("status.py", sleeping, cwd=tmp_path) == "running"
    generic("cancel.py", sleeping, cwd=tmp_path)
    assert wait_status(sleeping, tmp_path) == "failed"  # ended without an exit status

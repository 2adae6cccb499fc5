#!/usr/bin/env python3
"""`status.py <id>` prints running, success or failed for a job started by submit.py."""

import json
import sys
from pathlib import Path

STATE = Path(".snakemake") / "cluster-generic"


def alive(pid: int, start_time: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # A zombie has exited; a different start time means the pid was reused.
    return fields[0] != "Z" and fields[19] == start_time


def status(job_id: str) -> str:
    job_dir = STATE / job_id
    returncode = job_dir / "returncode"
    if returncode.exists():
        return "success" if returncode.read_text().strip() == "0" else "failed"
    record = json.loads((job_dir / "job.json").read_text())
    if alive(record["pid"], record["start_time"]):
        return "running"
    # It may have written its status between the two checks.
    if returncode.exists():
        return "success" if returncode.read_text().strip() == "0" else "failed"
    return "failed"  # ended without a status (killed)


if __name__ == "__main__":
    print(status(sys.argv[1]))

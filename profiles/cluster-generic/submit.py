#!/usr/bin/env python3
"""Submit one Snakemake jobscript as its own detached process (a one-machine "cluster").

snakemake-executor-plugin-cluster-generic calls `submit.py <jobscript>` and reads the job id
from the first line printed. The job's rule, threads and resources come from the jobscript's
`# properties = {...}` line; they are recorded with the job (a real scheduler's submit
command would turn them into its own flags, e.g. `qsub -l nodes=1:ppn={threads}`).
Snakemake itself keeps the running jobs within `cores`/`resources`: nothing is scheduled here.

State lives in .snakemake/cluster-generic/<id>/ (in the working directory): job.json (pid,
start time, properties), output.log (stdout and stderr), returncode (once finished).
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

STATE = Path(".snakemake") / "cluster-generic"


def job_properties(jobscript: Path) -> dict:
    for line in jobscript.read_text().splitlines():
        if line.startswith("# properties = "):
            return json.loads(line[len("# properties = ") :])
    return {}


def process_start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: tells a reused pid from the job's own process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def main() -> None:
    jobscript = Path(sys.argv[-1]).resolve()
    properties = job_properties(jobscript)
    STATE.mkdir(parents=True, exist_ok=True)
    job_dir = Path(tempfile.mkdtemp(prefix=f"{properties.get('rule', 'job')}-", dir=STATE))
    returncode = job_dir / "returncode"
    # The wrapper writes the exit status atomically, so a status query never reads half of it.
    wrapper = '/bin/sh "$1"; rc=$?; echo $rc > "$2.tmp" && mv "$2.tmp" "$2"; exit $rc'
    with open(job_dir / "output.log", "wb") as log:
        process = subprocess.Popen(
            ["/bin/sh", "-c", wrapper, "job", str(jobscript), str(returncode)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: cancel.py ends it with its children
        )
    record = {
        "pid": process.pid,
        "start_time": process_start_time(process.pid),
        "jobscript": str(jobscript),
        "rule": properties.get("rule"),
        "threads": properties.get("threads"),
        "resources": properties.get("resources", {}),
    }
    (job_dir / "job.json").write_text(json.dumps(record, indent=1))
    print(job_dir.name)


if __name__ == "__main__":
    main()

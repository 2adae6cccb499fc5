#!/usr/bin/env python3
"""`cancel.py <id>...` ends jobs started by submit.py (each job's whole process group)."""

import json
import os
import signal
import sys

from status import STATE, alive

for job_id in sys.argv[1:]:
    record = json.loads((STATE / job_id / "job.json").read_text())
    if alive(record["pid"], record["start_time"]):
        try:
            os.killpg(record["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass

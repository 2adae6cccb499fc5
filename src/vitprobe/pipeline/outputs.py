"""What ``results/<experiment>/`` holds: exactly the current config's outputs.

Snakemake never removes a file that no rule of the current config produces: after a model,
a comparison or map images are dropped from a config, their figures, shards and maps stay
next to the new ones and look like results of this config. Before any job runs, such files
are moved (never deleted: they may have cost hours) to ``stale/<timestamp>/``, with a log line
each; after the run, ``outputs.json`` lists every file the workflow produced for the config.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..atomic import write_text

log = logging.getLogger("vitprobe")

# The folders whose files belong to one config; logs, benchmarks and the tables are not
# managed (the tables are produced by every config).
MANAGED = ("figures", "shards", "maps", "pca", "parameters", "attention", "crops", "token_norms")
STALE = "stale"


def stale_outputs(out_dir: str | Path, expected: Iterable[str], owned: Iterable[str] = ()) -> list[Path]:
    """Files under the `MANAGED` folders of ``out_dir`` that the current config does not produce.

    Args:
        out_dir: the experiment's results folder.
        expected: the config's files, relative to ``out_dir``.
        owned: folders (relative to ``out_dir``) all of whose files belong to the config, for
            outputs whose exact list is known only after the sample checkpoint (the shards).
    """
    out_dir = Path(out_dir)
    expected = set(expected)
    owned = tuple(f"{folder.rstrip('/')}/" for folder in owned)
    stale = []
    for folder in MANAGED:
        for path in sorted((out_dir / folder).rglob("*")):
            relative = path.relative_to(out_dir).as_posix()
            if path.is_file() and relative not in expected and not relative.startswith(owned):
                stale.append(path)
    return stale


def quarantine(out_dir: str | Path, files: list[Path], stamp: str | None = None) -> Path | None:
    """Move ``files`` (under ``out_dir``) to ``out_dir/stale/<stamp>/``, keeping their relative
    paths, logging each; returns that folder (None when there is nothing to move)."""
    if not files:
        return None
    out_dir = Path(out_dir)
    target = out_dir / STALE / (stamp or time.strftime("%Y%m%d-%H%M%S"))
    for path in files:
        relative = path.relative_to(out_dir)
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target / relative)
        log.warning("%s is not an output of this config: moved to %s", path, target / relative)
    return target


def write_outputs(out_dir: str | Path, files: Iterable[str], path: str | Path) -> None:
    """``outputs.json``: the experiment's files for this config (relative to ``out_dir``), each with
    its size, after moving leftovers of earlier configs that only the finished sample reveals
    (shards beyond the current shard count)."""
    out_dir = Path(out_dir)
    files = sorted(set(files))
    quarantine(out_dir, stale_outputs(out_dir, files))
    listing = {name: (out_dir / name).stat().st_size for name in files}
    write_text(path, json.dumps({"files": listing}, indent=1) + "\n")


def report_command(out_dir: str, configfiles: Iterable[str]) -> str:
    """The ``snakemake --report`` command for this run, runnable as printed: it names the Python
    that runs this workflow (``.venv/bin/python -m snakemake``), since a virtual environment's
    ``snakemake`` need not be on PATH. Paths inside the working directory are shown relative to it."""

    def shown(path: str) -> str:
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    command = [shown(sys.executable), "-m", "snakemake", "--report", f"{out_dir}/report.html"]
    for path in configfiles:
        command += ["--configfile", shown(str(path))]
    return shlex.join(command)

"""The start of every pipeline job: its thread limit, and its log.

The job's own messages go to the rule's log file and to the console; everything else written to
stderr (TensorFlow's native start-up messages, such as its CUDA probe on a CPU machine) goes to
the log file only, so the console shows stages and progress, and the log keeps the detail.
"""

from __future__ import annotations

import logging
import os
import sys

from .threads import THREAD_VARIABLES, limit_threads


def start(log_paths, threads: int = 1) -> logging.Logger:
    """Limit the job to ``threads`` (before any numerical library loads) and send the ``vitprobe``
    logger to the rule's ``log:`` file (if any) and to the console."""
    limit_threads(threads)
    logger = logging.getLogger("vitprobe")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    console = sys.stderr
    handlers: list[logging.Handler] = []
    paths = list(log_paths)[:1]
    for path in paths:
        open(path, "w").close()
        handlers.append(logging.FileHandler(path, mode="a"))
        # Native stderr into the log (appending, so it interleaves with the handler's lines).
        console = os.fdopen(os.dup(2), "w", buffering=1)
        log_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    handlers.append(logging.StreamHandler(console))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    # The values the numerical libraries will read, as the job sees them (a cluster job's check);
    # the console interleaves parallel jobs: naming the log file says which job this is.
    settings = " ".join(f"{var}={os.environ.get(var)}" for var in THREAD_VARIABLES)
    logger.info("threads: %d (%s), log: %s", max(1, int(threads)), settings, paths[0] if paths else "none")

    def log_failure(kind, error, tb):  # the reason a job failed belongs in its log file and on the console
        logger.error("failed: %s", error, exc_info=(kind, error, tb))

    sys.excepthook = log_failure
    return logger

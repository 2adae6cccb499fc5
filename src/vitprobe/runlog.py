"""Logging for the pipeline's scripts: to the rule's log file and to stderr."""

from __future__ import annotations

import logging
import sys


def start(log_paths) -> logging.Logger:
    """Send the ``vitprobe`` logger to the rule's ``log:`` file (if any) and to stderr."""
    logger = logging.getLogger("vitprobe")
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    handlers += [logging.FileHandler(path, mode="w") for path in list(log_paths)[:1]]
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)

    def log_failure(kind, error, tb):  # the reason a job failed belongs in its log file
        logger.error("failed: %s", error, exc_info=(kind, error, tb))

    sys.excepthook = log_failure
    return logger

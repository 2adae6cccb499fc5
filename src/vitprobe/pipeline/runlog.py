"""The start of every pipeline job: its thread limit, jax's compilation cache, and its log.

The job's own messages go to the rule's log file and to the console; everything else written to
stderr (TensorFlow's native start-up messages, such as its CUDA probe on a CPU machine) goes to
the log file only, so the console shows stages and progress, and the log keeps the detail.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

from ..environment import cache_dir, keras_backend
from ..escape import terminal_text
from ..hardware import machine_key
from .threads import THREAD_VARIABLES, limit_threads


def start(log_paths, threads: int = 1, resources=None) -> logging.Logger:
    """Limit the job to ``threads`` (before any numerical library loads), keep jax's compiled
    programs between jobs (`persistent_compile_cache`) and send the ``vitprobe`` logger to the
    rule's ``log:`` file (if any) and to the console. The first line says the threads and the
    memory the rule declared (``resources``: the job's, with ``mem_mb``), beside the peak that its
    benchmark file records."""
    limit_threads(threads)
    compile_cache = persistent_compile_cache()
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
        handler.addFilter(_escape_arguments)
        logger.addHandler(handler)
    # The values the numerical libraries will read, as the job sees them (a cluster job's check);
    # the console interleaves parallel jobs: naming the log file says which job this is.
    settings = " ".join(f"{var}={os.environ.get(var)}" for var in THREAD_VARIABLES)
    memory = (resources or {}).get("mem_mb")
    declared = f"{memory} MB declared" if memory else "not declared"
    logger.info("threads: %d (%s), memory: %s, log: %s", max(1, int(threads)), settings, declared, paths[0] if paths else "none")
    if compile_cache and keras_backend() == "jax":
        logger.info("jax compilation cache: %s", compile_cache)

    def log_failure(kind, error, tb):  # the reason a job failed belongs in its log file and on the console
        logger.error("failed: %s", error, exc_info=(kind, error, tb))

    sys.excepthook = log_failure
    return logger


def _escape_arguments(record: logging.LogRecord) -> bool:
    """The values a message is formatted with (file names, image ids, labels: user text) pass
    through `terminal_text`, so that a file name cannot recolour the console or forge a log line;
    the message's own text is the code's. An exception's message, which the code wrote with its
    own line breaks, escapes the names it holds where it is raised."""
    if isinstance(record.args, tuple):
        record.args = tuple(terminal_text(a) if isinstance(a, str) else a for a in record.args)
    return True


def persistent_compile_cache() -> str | None:
    """Let jax keep what XLA compiles in ``$VITPROBE_CACHE/xla/<cpu>/jax-<version>``, so that every
    extract job of a model after the first loads its program instead of compiling it again (the
    weights are variables, so all shards of a model compile the same program; on a GPU the
    compile is most of a job's start-up). Measured on this Ice Lake Xeon (jax on CPU, ViT-S/16
    with 4 blocks, batch 8, one thread): the first batch's compile fell from 6.8 to 4.9 and to
    5.4 CPU seconds in two pairs of runs (the rest is tracing). Keyed by CPU, since XLA's CPU code
    targets the host's features and a shared home on a mixed cluster must not hand AVX-512 code
    to an AVX2 node. A
    ``JAX_COMPILATION_CACHE_DIR`` the user set is kept.

    TensorFlow's equivalent (``TF_XLA_FLAGS=--tf_xla_persistent_cache_directory``) also works
    (3.4 -> 1.7 CPU seconds with ``extract.compile: xla``) but TensorFlow 2.21 logs a parse error
    and a "could lead to SIGILL" warning on every load, on the machine that compiled it, so it is
    left off. Must run before jax is imported; returns the folder, or None without jax."""
    try:
        version = metadata.version("jax")
    except metadata.PackageNotFoundError:
        return None
    return os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir() / "xla" / machine_key() / f"jax-{version}"))

"""A job's thread limit (vitprobe.pipeline.threads) must be set before a numerical library loads:
each runs in a fresh interpreter here, since this test process has already imported them."""

import ast
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO
from vitprobe.pipeline.threads import THREAD_VARIABLES

SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
LIMITED = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"}


def python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(PYTHONPATH=str(REPO / "src"), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_limit_after_keras_is_refused():
    result = python("import keras\nfrom vitprobe.pipeline.threads import limit_threads\nlimit_threads(3)\n")
    assert result.returncode != 0
    assert "RuntimeError: limit_threads(3) called after" in result.stderr and "keras" in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads by name in /proc")
def test_limit_sets_the_variables_that_tensorflow_obeys():
    """The variables are set, and TensorFlow imported afterwards sizes its pools from them: XLA's CPU
    pool (threads named tf_XLAEigen, sized by the intra-op setting) has exactly the limit's threads."""
    result = python(
        "import collections, json, os\n"
        "from vitprobe.pipeline.threads import THREAD_VARIABLES, limit_threads\n"
        "limit_threads(3)\n"
        "import tensorflow as tf\n"
        "x = tf.ones((256, 256))\n"
        "tf.function(lambda a: tf.matmul(a, a), jit_compile=True)(x)\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "print(json.dumps({'env': {v: os.environ[v] for v in THREAD_VARIABLES}, 'threads': collections.Counter(names)}))\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["env"] == {**{v: "3" for v in LIMITED}, "TF_NUM_INTEROP_THREADS": "1"}
    assert seen["threads"]["tf_XLAEigen"] == 3


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_script_limits_threads_before_anything_else(script):
    """`start(snakemake.log, snakemake.threads, snakemake.resources)` right after importing it: the
    rule's thread count, set before the stage import loads Keras (and its memory, logged)."""
    body = ast.parse(script.read_text()).body
    assert ast.unparse(body[0]) == "from vitprobe.pipeline.runlog import start"
    assert ast.unparse(body[1]) == "start(snakemake.log, snakemake.threads, snakemake.resources)"

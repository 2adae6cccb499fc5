"""Helpers shared by the test modules (a test module never imports another one): the repository's
paths, snakemake runs in a copy of the workflow, the reference scripts in their own processes, the
timm parity cases with their comparison, and the PCA feature maps' float64 reference."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
REFERENCE = TESTS / "reference"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_reference(script: str, *args, env: dict | None = None) -> None:
    """Run a reference script (timm, onnxruntime) in its own Python process."""
    result = subprocess.run(
        [sys.executable, str(REFERENCE / script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode:
        raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")


def load_reference(script: str) -> ModuleType:
    """A reference script imported as a module, for its helpers that need only numpy at import time
    (what needs torch or onnxruntime imports it inside the function that runs it)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REFERENCE / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_workflow(dest: Path) -> Path:
    """Snakefile, rules, schema and the library sources (so a test can edit code and see
    what reruns without touching the repository)."""
    for name in ("Snakefile", "config.yaml", "weights.lock.json"):
        shutil.copy(REPO / name, dest / name)
    for name in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake(workdir: Path, *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "VITPROBE_WEIGHTS_LOCK": str(workdir / "weights.lock.json")},
    )
    if check and result.returncode:
        raise AssertionError(f"snakemake {args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def assert_jobs_announced(console: str) -> None:
    """Every job of a run's console is announced by one short line, its rule's message ("Job 5:
    extract vit shard 0, log: ..."), never by the list of its inputs and outputs."""
    finished = re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", console, flags=re.M)
    announced = re.findall(r"^Job (\d+): (\w+)(.*)$", console, flags=re.M)
    assert finished and sorted(finished) == sorted((job, rule) for job, rule, _ in announced), console[-3000:]
    assert all(len(f"Job {job}: {rule}{rest}") <= 300 for job, rule, rest in announced), announced
    assert not re.search(r"^\s+(input|output|reason): ", console, flags=re.M)


def peak_memory_mb(code: str) -> float:
    """Peak resident memory (MB) of a fresh interpreter running ``code`` (with ``vitprobe`` from
    this checkout). The peak is reset first (``/proc/self/clear_refs``): the kernel carries the
    forking parent's resident size into a child's ``ru_maxrss``, so a test process holding a few
    hundred MB would otherwise show in every measurement."""
    script = (
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        + textwrap.dedent(code)
        + "\nimport re\nprint('peak_kb', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split("peak_kb")[-1]) / 1024


def latest_change(paths: list[Path]) -> float:
    """The newest modification time (seconds) of any file under ``paths`` (0 when none)."""
    times = [0.0]
    for path in paths:
        files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
        for file in files:
            try:
                times.append(file.stat().st_mtime)
            except OSError:  # renamed or removed while listed
                pass
    return max(times)


def wait_while_progressing(process: subprocess.Popen, watched: list[Path], stall: float = 900.0) -> bool:
    """Wait for ``process`` to exit for as long as it makes progress: some file under ``watched``
    (its log, its results folder) changed within the last ``stall`` seconds. No fixed budget, so a
    loaded machine makes a run slower, never a failure; a hung one is still caught. Returns False
    when it stalled (the process is left running for the caller to stop)."""
    while process.poll() is None:
        if time.time() - latest_change(watched) > stall:
            return False
        time.sleep(1.0)
    return True


def planned_jobs(workdir: Path, config: Path) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing would run)."""
    out = snakemake(workdir, "-n", "--configfile", str(config)).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("Reasons:")[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M))
    jobs.pop("total", None)
    return {rule: int(n) for rule, n in jobs.items()}


def jobs_after_editing(workdir: Path, config: Path, relative: str) -> dict[str, int]:
    """The dry-run job list after an edit of one library file (restored afterwards)."""
    path = workdir / relative
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        return planned_jobs(workdir, config)
    finally:
        path.write_text(original)


# The bound of the non-default sizes of every family (issue 22): logits, embeddings and features within
# 1e-5 of the reference's largest magnitude (measured: at most 2.9e-6 on a Sapphire Rapids Xeon).
FAMILY_RTOL = 1e-5

# Parity cases: timm model + kwargs on the reference side, the vitprobe arch + spec
# overrides on ours. Depth is cut where the full depth adds run time but no coverage
# (one full-depth ViT-B/16 stays). These are written by hand for what they test (sizes,
# resampling, a timm name other than the preset's); `PARITY_CASES` adds one for every other
# architecture of the presets table.
_WRITTEN_CASES = [
    dict(id="vit_b16", model="vit_base_patch16_224", kwargs={}, arch="vit_base_patch16_224", overrides={}),
    dict(id="vit_t16", model="vit_tiny_patch16_224", kwargs=dict(depth=2), arch="vit_tiny_patch16_224", overrides=dict(depth=2)),
    dict(
        id="vit_s32_384",
        model="vit_small_patch32_384",
        kwargs=dict(depth=2),
        arch="vit_small_patch32_384",
        overrides=dict(depth=2),
    ),
    dict(id="vit_b8", model="vit_base_patch8_224", kwargs=dict(depth=1), arch="vit_base_patch8_224", overrides=dict(depth=1)),
    dict(
        id="vit_l16_384",
        model="vit_large_patch16_384",
        kwargs=dict(depth=1),
        arch="vit_large_patch16_384",
        overrides=dict(depth=1),
    ),
    dict(
        id="deit_s", model="deit_small_patch16_224", kwargs=dict(depth=2), arch="deit_small_patch16_224", overrides=dict(depth=2)
    ),
    dict(
        id="deit_t_dist",
        model="deit_tiny_distilled_patch16_224",
        kwargs=dict(depth=2),
        arch="deit_tiny_distilled_patch16_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="dino_s16",
        model="vit_small_patch16_224.dino",
        kwargs=dict(depth=2),
        arch="vit_small_patch16_224.dino",
        overrides=dict(depth=2),
    ),
    dict(
        id="dinov2_s14",
        model="vit_small_patch14_dinov2",
        kwargs=dict(depth=2, img_size=224, num_classes=0),
        arch="vit_small_patch14_dinov2",
        overrides=dict(depth=2, image_size=224),
    ),
    dict(
        id="dinov2_s14_reg4",
        model="vit_small_patch14_reg4_dinov2",
        kwargs=dict(depth=2, img_size=224, num_classes=0),
        arch="vit_small_patch14_reg4_dinov2",
        overrides=dict(depth=2, image_size=224),
    ),
    # Position-embedding resampling, judged by timm's own checkpoint filter:
    # a 224 checkpoint run at 384 (upsampling), a 518 DINOv2 checkpoint run at 224 (downsampling).
    dict(
        id="vit_t16_224_to_384",
        model="vit_tiny_patch16_224",
        kwargs=dict(depth=2, img_size=384),
        checkpoint_kwargs=dict(depth=2),
        arch="vit_tiny_patch16_224",
        overrides=dict(depth=2, image_size=384),
    ),
    # The later families (depth cut to 1-2 blocks; every block has the same code).
    dict(
        id="clip_b16_openai",
        model="vit_base_patch16_clip_quickgelu_224",
        kwargs=dict(depth=2),
        arch="vit_base_patch16_clip_quickgelu_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="clip_b16_laion",
        model="vit_base_patch16_clip_224.laion2b",
        kwargs=dict(depth=1),
        arch="vit_base_patch16_clip_224",
        overrides=dict(depth=1),
    ),
    dict(
        id="siglip_b16",
        model="vit_base_patch16_siglip_224",
        kwargs=dict(depth=2),
        arch="vit_base_patch16_siglip_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="mae_b16",
        model="vit_base_patch16_224.mae",
        kwargs=dict(depth=1),
        arch="vit_base_patch16_224.mae",
        overrides=dict(depth=1),
    ),
    dict(
        id="deit3_s16",
        model="deit3_small_patch16_224",
        kwargs=dict(depth=2),
        arch="deit3_small_patch16_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="deit3_b16",
        model="deit3_base_patch16_224",
        kwargs=dict(depth=1),
        arch="deit3_base_patch16_224",
        overrides=dict(depth=1),
    ),
    dict(
        id="beitv2_b16",
        model="beitv2_base_patch16_224",
        kwargs=dict(depth=2),
        arch="beitv2_base_patch16_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="eva02_b14",
        model="eva02_base_patch14_224.mim_in22k",
        kwargs=dict(depth=2),
        arch="eva02_base_patch14_224",
        overrides=dict(depth=2),
    ),
    # A non-default size or patch of every family (issue 22), large ones at reduced depth: the blocks are
    # copies, the code that differs is in one block (packed SwiGLU, tanh GELU, 27-deep So400m's MLP width).
    dict(
        id="clip_b32",
        rtol=FAMILY_RTOL,
        model="vit_base_patch32_clip_224",
        kwargs=dict(depth=2, num_classes=512),
        arch="vit_base_patch32_clip_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="eva02_t14", rtol=FAMILY_RTOL, model="eva02_tiny_patch14_224", kwargs={}, arch="eva02_tiny_patch14_224", overrides={}
    ),
    dict(
        id="dinov2_l14_reg4",
        rtol=FAMILY_RTOL,
        model="vit_large_patch14_reg4_dinov2",
        kwargs=dict(depth=2, img_size=224, num_classes=0),
        arch="vit_large_patch14_reg4_dinov2",
        overrides=dict(depth=2, image_size=224),
    ),
    dict(
        id="dinov2_g14",
        rtol=FAMILY_RTOL,
        model="vit_giant_patch14_dinov2",
        kwargs=dict(depth=1, img_size=224, num_classes=0),
        arch="vit_giant_patch14_dinov2",
        overrides=dict(depth=1, image_size=224),
    ),
    dict(
        id="siglip_so400m14",
        rtol=FAMILY_RTOL,
        model="vit_so400m_patch14_siglip_224",
        kwargs=dict(depth=2),
        arch="vit_so400m_patch14_siglip_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="siglip_so400m16_256",
        rtol=FAMILY_RTOL,
        model="vit_so400m_patch16_siglip_256",
        kwargs=dict(depth=1),
        arch="vit_so400m_patch16_siglip_256",
        overrides=dict(depth=1),
    ),
    dict(
        id="deit3_l16",
        rtol=FAMILY_RTOL,
        model="deit3_large_patch16_224",
        kwargs=dict(depth=2),
        arch="deit3_large_patch16_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="deit_b16_dist_384",
        rtol=FAMILY_RTOL,
        model="deit_base_distilled_patch16_384",
        kwargs=dict(depth=1),
        arch="deit_base_distilled_patch16_384",
        overrides=dict(depth=1),
    ),
    dict(
        id="beitv2_l16",
        rtol=FAMILY_RTOL,
        model="beitv2_large_patch16_224",
        kwargs=dict(depth=2),
        arch="beitv2_large_patch16_224",
        overrides=dict(depth=2),
    ),
    dict(
        id="mae_l16",
        rtol=FAMILY_RTOL,
        model="vit_large_patch16_224.mae",
        kwargs=dict(depth=2),
        arch="vit_large_patch16_224.mae",
        overrides=dict(depth=2),
    ),
    dict(
        id="dino_s8",
        rtol=FAMILY_RTOL,
        model="vit_small_patch8_224.dino",
        kwargs=dict(depth=1),
        arch="vit_small_patch8_224.dino",
        overrides=dict(depth=1),
    ),
    dict(
        id="vit_h14",
        rtol=FAMILY_RTOL,
        model="vit_huge_patch14_224",
        kwargs=dict(depth=1, num_classes=1000),
        arch="vit_huge_patch14_224",
        overrides=dict(depth=1),
    ),
    dict(
        id="eva_g14",
        rtol=FAMILY_RTOL,
        model="eva_giant_patch14_224",
        kwargs=dict(depth=1),
        arch="eva_giant_patch14_224",
        overrides=dict(depth=1),
    ),
    # OpenAI's CLIP-B/32 and -L/14 weights run QuickGELU: timm's tagged names build them with exact GELU,
    # so the QuickGELU architectures are built under their own names (heads as the presets' checkpoints).
    *[
        dict(
            id=f"clip_quickgelu_{arch}",
            rtol=FAMILY_RTOL,
            model=arch,
            kwargs=dict(depth=1, num_classes=width),
            arch=arch,
            overrides=dict(depth=1),
        )
        for arch, width in (
            ("vit_base_patch32_clip_quickgelu_224", 512),
            ("vit_large_patch14_clip_quickgelu_224", 768),
            ("vit_large_patch14_clip_quickgelu_336", 768),
        )
    ],
    dict(
        id="dinov2_518_to_224",
        model="vit_small_patch14_dinov2",
        kwargs=dict(depth=1, img_size=224, num_classes=0),
        checkpoint_kwargs=dict(depth=1, num_classes=0),
        arch="vit_small_patch14_dinov2",
        overrides=dict(depth=1, image_size=224),
    ),
]


# Preset architectures whose weights timm does not build, each with the test that judges it instead.
PARITY_EQUIVALENTS = {
    # An ONNX graph shipped in a package: onnxruntime runs that very graph as the reference.
    "dinov2_s14_imgfocus": "test_onnx_imgfocus.py",
}


def _preset_cases() -> list[dict]:
    """One depth-1 case for every preset architecture that no written case covers, built in timm
    under the preset's own name (so timm's pretrained cfg sets what the name implies, such as no
    head), at the preset's image size up to 384 px (DINOv2's 518 px runs at 224, as the written DINOv2
    cases do: 1369 tokens would take a minute a case and test no other code). Generated from the
    presets table, so a new preset gets its parity case without a line here."""
    from vitprobe.models.presets import PRESETS
    from vitprobe.models.spec import get_spec

    covered = {case["arch"] for case in _WRITTEN_CASES} | set(PARITY_EQUIVALENTS)
    cases = {}
    for preset in PRESETS.values():
        if preset.arch not in covered and preset.arch not in cases:
            assert preset.weights == f"hf-hub:timm/{preset.name}", f"{preset.name}: no timm name to build its reference from"
            size = {} if get_spec(preset.arch).image_size <= 384 else dict(img_size=224)
            cases[preset.arch] = dict(
                id=f"preset_{preset.name}".replace(".", "_"),
                model=preset.name,
                kwargs=dict(depth=1, **size),
                arch=preset.arch,
                overrides=dict(depth=1, **{"image_size": size["img_size"]} if size else {}),
            )
    return list(cases.values())


PARITY_CASES = _WRITTEN_CASES + _preset_cases()

ATTN_ATOL = 1e-5
LOGITS_RTOL = 1e-4
BLOCK_RTOL = 1e-4  # relative to the largest |value| of the block's output


def reference_reductions(
    attentions: list[np.ndarray], num_prefix: int, grid: int, patch: int, pool: np.ndarray | None = None
) -> dict:
    """The per-image reductions in float64 from first principles (full rollout matrix products).
    ``pool``: an attention-pooling head's (B, heads, 1, N) attention, which takes the CLS row's place."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    pixel = patch * np.hypot(rows[:, None] - rows[None, :], cols[:, None] - cols[None, :])
    a = [x.astype(np.float64) for x in attentions]
    patch_rows = [x[:, :, num_prefix:] for x in a]
    n = a[0].shape[-1]
    rollout = np.eye(n)
    for x in a:
        joint = x.mean(1) + np.eye(n)
        rollout = (joint / joint.sum(-1, keepdims=True)) @ rollout
    if pool is None:
        row, cls = rollout[:, 0], a[-1][:, :, 0]
    else:
        pooled = pool.astype(np.float64).mean(1)[:, 0]
        row, cls = np.einsum("bn,bnm->bm", pooled / pooled.sum(-1, keepdims=True), rollout), pool.astype(np.float64)[:, :, 0]
    return {
        "distance": np.stack([(r[..., num_prefix:] * pixel).sum(-1).mean(-1) for r in patch_rows], 1),
        "prefix_mass": np.stack([r[..., :num_prefix].sum(-1).mean(-1) for r in patch_rows], 1),
        "entropy": np.stack([-(r * np.log(np.where(r > 0, r, 1))).sum(-1).mean(-1) for r in patch_rows], 1),
        "rollout": row[:, num_prefix:].reshape(-1, grid, grid),
        "cls": cls[:, :, num_prefix:].reshape(*cls.shape[:2], grid, grid),
    }


REDUCTION_ATOL = {"distance": 1e-3, "prefix_mass": 1e-5, "entropy": 1e-4, "rollout": 1e-5, "cls": 1e-5}


def hard_entropy_logits(keys: int = 40) -> np.ndarray:
    """(rows, keys) float32 attention logits that a float32 entropy gets wrong if it is careless:
    ordinary and peaked rows, one key far above the rest (weights of e^-60, normal in float32,
    and of e^-120, which underflow to 0), masked keys (float32's min), two tied keys with the
    rest masked (entropy log 2), every logit shifted by +-1e4 (entropy unchanged, float32 steps
    of 1e-3), and a spread of 1e3 (nearly one-hot)."""
    rng = np.random.default_rng(25)
    normal = rng.standard_normal((4, keys))
    lowest = np.finfo(np.float32).min
    rows = [normal[0], 8 * normal[1], 1e3 * normal[2], normal[3] + 1e4, normal[3] - 1e4]
    for gap in (60.0, 120.0):
        row = rng.standard_normal(keys)
        row[keys // 3] += gap
        rows.append(row)
    masked = normal[1].copy()
    masked[::2] = lowest
    tied = np.full(keys, lowest)
    tied[[3, 7]] = 2.5
    rows += [masked, tied]
    return np.stack(rows).astype(np.float32)


def entropy_float64(logits: np.ndarray) -> np.ndarray:
    """Row entropy in nats of softmax(logits), in float64 from the definition -sum p log p."""
    s = logits.astype(np.float64)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)


def assert_close_relative(got, want, name: str, rtol: float = LOGITS_RTOL) -> None:
    """Within ``rtol`` of the reference's largest magnitude."""
    assert got is not None and got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max(), err_msg=name)


def compare(model, ref, rtol: float = LOGITS_RTOL) -> None:
    """Attention, logits, and the reductions computed inside the compiled forward pass, with the map
    images' patch features and attention that the same program returns; logits, embedding and
    features within ``rtol`` of the reference's largest magnitude."""
    reduced = model.forward_reduced(ref["input"], map_images=len(ref["input"]))
    depth = model.spec.depth
    pool = ref[f"attn_{depth}"] if model.spec.has_pool_query else None
    expected = reference_reductions(
        [ref[f"attn_{i}"] for i in range(depth)], model.num_prefix_tokens, model.grid_size, model.patch_size, pool
    )
    for name, atol in REDUCTION_ATOL.items():
        np.testing.assert_allclose(reduced.reductions[name], expected[name], rtol=0, atol=atol, err_msg=name)
    assert reduced.reductions["row_error"].shape[1] == depth + model.spec.has_pool_query
    assert reduced.reductions["row_error"].max() < 1e-4
    assert reduced.map_attention.shape[1] == depth
    for i in range(depth):
        np.testing.assert_allclose(
            reduced.map_attention[:, i], ref[f"attn_{i}"], rtol=0, atol=ATTN_ATOL, err_msg=f"map block {i}"
        )
    if "tokens" in ref:  # timm's forward_features: the final norm's output, where the model has one
        patches = ref["tokens"][:, model.num_prefix_tokens :]
        np.testing.assert_allclose(reduced.map_features, patches, rtol=0, atol=BLOCK_RTOL * np.abs(patches).max())
    out = model.forward(ref["input"])
    assert len(out.attentions) == depth + model.spec.has_pool_query
    assert f"attn_{len(out.attentions)}" not in ref
    if "features" in ref:
        assert_close_relative(out.features, ref["features"], "features", rtol)
    for i, attn in enumerate(out.attentions):
        expected = ref[f"attn_{i}"]
        assert attn.shape == expected.shape
        # Sharpened weights: the test means something only if attention is far from uniform.
        assert expected.max(-1).mean() >= 0.2
        np.testing.assert_allclose(attn, expected, rtol=0, atol=ATTN_ATOL, err_msg=f"block {i}")
    with_blocks = model.forward(ref["input"], block_outputs=True)
    assert len(with_blocks.block_outputs) == depth
    for i, tokens in enumerate(with_blocks.block_outputs):
        expected = ref[f"block_{i}"]
        assert tokens.shape == expected.shape == (len(ref["input"]), model.spec.num_tokens, model.spec.embed_dim)
        np.testing.assert_allclose(tokens, expected, rtol=0, atol=BLOCK_RTOL * np.abs(expected).max(), err_msg=f"block {i}")
    # The program that also returns block outputs computes the same attention and logits.
    np.testing.assert_allclose(with_blocks.attentions[-1], out.attentions[-1], rtol=0, atol=1e-6)
    if out.logits is not None:
        np.testing.assert_allclose(with_blocks.logits, out.logits, rtol=1e-6, atol=1e-6)
    if model.spec.head_is_projection:  # CLIP: timm's "logits" are the image embedding
        assert_close_relative(out.embedding, ref["logits"], "embedding", rtol)
        assert out.logits is None and reduced.logits is None
    elif "logits" in ref:
        scale = np.abs(ref["logits"]).max()
        np.testing.assert_allclose(out.logits, ref["logits"], rtol=0, atol=rtol * scale)
        heads = sorted(k for k in ref if k.startswith("head_"))
        assert len(out.head_logits) == len(heads)
        for got, key in zip(out.head_logits, heads):
            np.testing.assert_allclose(got, ref[key], rtol=0, atol=rtol * scale)
        np.testing.assert_allclose(reduced.logits, ref["logits"], rtol=0, atol=rtol * scale)
    else:
        assert out.logits is None and reduced.logits is None


def numpy_pca(rows: np.ndarray, count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Independent PCA reference: eigenvectors of the covariance matrix in float64 (the library
    uses the SVD of the centred rows); projections (n, count) and explained variance ratios (count,)."""
    centred = np.asarray(rows, np.float64) - np.mean(rows, axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1][:count]
    return centred @ vectors[:, order], values[order] / values.sum()


def _sign_aligned(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``reference`` with each column's sign flipped to agree with ``ours``."""
    return reference * np.where((ours * reference).sum(axis=0) < 0, -1.0, 1.0)


def assert_pca_matches(maps, patch_features: np.ndarray, threshold: float = 0.0) -> None:
    """``maps`` (a `PCAMaps`, or the PCA stage's .npz with the same names) against `numpy_pca`
    of ``patch_features`` (images, patches, dim), e.g. timm's tokens of the same pixels.

    Projections agree up to each component's sign (a convention the library's own tests check);
    the mask is recomputed from the reference's first component with the documented border rule,
    so it must agree exactly (after checking that no patch lies so near the threshold that
    float32 rounding could move it); the foreground PCA is fitted on the reference's mask.
    Random weights give nearly isotropic features (eigenvalue gaps of a few percent of the top
    one), which amplify float32 differences of 1e-6 to about 5e-6 of the projections' range: the
    tolerances leave a factor of 100 for other CPUs."""
    images, patches, dim = patch_features.shape
    rows = np.asarray(patch_features, np.float64).reshape(-1, dim)
    expected, ratios = numpy_pca(rows)
    get = (lambda name: getattr(maps, name)) if hasattr(maps, "explained") else (lambda name: maps[name])
    np.testing.assert_allclose(get("explained"), ratios, rtol=1e-5)
    got = np.asarray(get("projections"), np.float64).reshape(-1, 3)
    np.testing.assert_allclose(got, _sign_aligned(got, expected), rtol=0, atol=5e-4 * np.abs(expected).max())

    grid = int(round(np.sqrt(patches)))
    ring = np.ones((grid, grid), dtype=bool)
    ring[1:-1, 1:-1] = False
    first = expected[:, 0] * (-1 if expected[np.tile(ring.ravel(), images), 0].mean() > 0 else 1)
    z = first / first.std()
    assert np.abs(z - threshold).min() > 1e-3, "a patch lies at the threshold: the mask check would depend on rounding"
    np.testing.assert_array_equal(np.asarray(get("mask")).ravel(), z > threshold)

    inside, inside_ratios = numpy_pca(rows[z > threshold])
    np.testing.assert_allclose(get("foreground_explained"), inside_ratios, rtol=1e-5)
    got = np.asarray(get("foreground"), np.float64).reshape(-1, 3)
    assert not got[z <= threshold].any()
    got = got[z > threshold]
    np.testing.assert_allclose(got, _sign_aligned(got, inside), rtol=0, atol=5e-4 * np.abs(inside).max())

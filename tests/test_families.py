"""Families, not names: every name in timm's model list for the supported families resolves to the
layout timm builds, or is refused with its reason, and docs/families.md lists each with its status.

The timm side runs in its own process (tests/reference/timm_state_keys.py): it lists each family's
names (`Family.timm_names`, at the installed timm) and builds every model on the ``meta`` device,
so no weights exist and the billion-parameter towers cost nothing. vitprobe's side resolves each
name with `get_spec` and builds the Keras model at depth 1: timm's keys of block 0 and outside the
blocks must load into it exactly (`assign_state`, as a checkpoint is loaded: every key consumed,
every shape right), and timm's blocks must be ``depth`` copies of block 0. The head's width is the
checkpoint's (an in1k fine-tune of a CLIP tower has 1000 classes), so timm builds each name with the
number of classes its vitprobe spec has; prefix tokens, activation, norm eps, patch and image size
are compared as facts beside the shapes.
"""

import json
import re
from collections import defaultdict

import numpy as np
import pytest

from helpers import REPO, run_reference
from vitprobe.models.spec import FAMILIES, family_of, get_spec, refusal
from vitprobe.models.vit import VisionTransformer
from vitprobe.weights.convert import assign_state

DOCS = REPO / "docs" / "families.md"
NAMES_HEADING = "## Names of every family, with their status"
ACTIVATION = {
    "gelu": "GELU(none)",
    "gelu_tanh": "GELU(tanh)",
    "quick_gelu": "QuickGELU",
    "swiglu": "SiLU",
    "swiglu_packed": "SiLU",
}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """{family: [names]} from timm, the specs of the names vitprobe resolves, and timm's layouts of those."""
    out = tmp_path_factory.mktemp("families")
    queries = {f.name: dict(include=list(f.timm_names), exclude=list(f.timm_exclude), pretrained=f.pretrained) for f in FAMILIES}
    (out / "families.json").write_text(json.dumps(queries))
    run_reference("timm_state_keys.py", "--list", out / "families.json", out / "names.json")
    names = json.loads((out / "names.json").read_text())
    specs, failures, job = {}, {}, []
    for family in FAMILIES:
        for name in names[family.name]:
            if refusal(name) is None:
                try:
                    specs[name] = get_spec(name)
                except KeyError as e:
                    failures[name] = str(e)
                    continue
                job.append(dict(id=name, model=name, kwargs=dict(num_classes=specs[name].num_classes)))
    (out / "job.json").write_text(json.dumps(job))
    run_reference("timm_state_keys.py", out / "job.json", out / "layouts.json")
    return names, specs, failures, json.loads((out / "layouts.json").read_text())


def test_every_timm_name_resolves_or_is_refused(walk):
    """No name of a family's list falls through: each parses under its own family and either resolves
    (the fixture called `get_spec` on it) or is refused by a `REFUSED` entry."""
    names, specs, failures, _ = walk
    assert not failures, "\n".join(f"{name}: {why}" for name, why in failures.items())
    for family in FAMILIES:
        assert names[family.name], f"timm lists no {family.name} names for {family.timm_names}"
        for name in names[family.name]:
            assert name in specs or refusal(name), name
            if name in specs:
                assert family_of(name).name == family.name, name
    assert any(refusal(name) for family in FAMILIES for name in names[family.name])


def _split_blocks(state: dict, depth: int) -> dict:
    """timm's keys outside the blocks and of block 0, after checking that blocks 0..depth-1 exist
    and have block 0's keys and shapes."""
    blocks = defaultdict(dict)
    rest = {}
    for key, shape in state.items():
        match = _BLOCK.fullmatch(key)
        if match:
            blocks[int(match[1])][match[2]] = tuple(shape)
        else:
            rest[key] = tuple(shape)
    assert sorted(blocks) == list(range(depth)), f"timm has blocks {sorted(blocks)}, the spec {depth}"
    for index, block in blocks.items():
        assert block == blocks[0], f"block {index} differs from block 0"
    return {**rest, **{f"blocks.0.{key}": shape for key, shape in blocks[0].items()}}


def test_layout_matches_timm(walk):
    """Every resolved name: timm's parameters (names and shapes, every block) are the Keras model's,
    and the facts the shapes do not show agree."""
    _, specs, _, layouts = walk
    problems = []
    for name, spec in specs.items():
        layout, facts = layouts[name]["state"], layouts[name]["facts"]
        try:
            state = _split_blocks(layout, spec.depth)
            model = VisionTransformer(spec.replace(depth=1))
            assign_state(model, {key: np.broadcast_to(np.float32(0), shape) for key, shape in state.items()}, name)
            assert set(model.weights_by_name) == set(state)
            expected = dict(
                num_prefix_tokens=spec.num_prefix_tokens,
                activation=ACTIVATION[spec.mlp],
                norm_eps=spec.norm_eps,
                patch_size=spec.patch_size,
                image_size=spec.image_size,
            )
            assert facts == expected, f"timm {facts}, vitprobe {expected}"
        except Exception as e:  # collect every name's problem, then fail once
            problems.append(f"{name}: {e}")
    assert not problems, "\n".join(problems)


def table_rows(names: dict, specs: dict) -> list[str]:
    """The rows of docs/families.md's table of names, in family order."""
    rows = []
    for family in FAMILIES:
        for name in names[family.name]:
            if name in specs:
                s = specs[name]
                shape = f"{s.embed_dim} / {s.depth} / {s.num_heads} / {s.mlp_dim} {s.mlp}"
                rows.append(f"| {family.name} | `{name}` | {shape} | {s.patch_size} / {s.image_size} | resolved |")
            else:
                rows.append(f"| {family.name} | `{name}` | | | refused: {refusal(name)} |")
    return rows


def test_docs_list_every_name_with_its_status(walk):
    names, specs, _, _ = walk
    expected = table_rows(names, specs)
    section = DOCS.read_text().split(NAMES_HEADING, 1)[-1]
    documented = [line for line in section.splitlines() if re.match(r"\| [a-z0-9]+ \| `", line)]
    assert documented == expected, "docs/families.md's table of names is stale; its rows should be:\n" + "\n".join(expected)

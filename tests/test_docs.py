"""The documents: README.md is a front page, every relative link and image in it and in docs/
resolves, docs/configuration.md's tables are the schema's and vitprobe.environment's, and the
benchmark records live where docs/performance.md cites them."""

import ast
import re

import pytest
import yaml

from helpers import REPO
from vitprobe.environment import VARIABLES
from vitprobe.pipeline import config_docs

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at the first space or closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", re.sub(r"```.*?```", "", markdown, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def relative_links(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_anchor_rule_on_known_headings():
    text = "# Performance\n## `make bench`: vitprobe against timm, side by side\n```\n# not a heading\n```\n"
    assert anchors(text) == {"performance", "make-bench-vitprobe-against-timm-side-by-side"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_image_resolves(document):
    links = relative_links(document)
    broken = []
    for target in links:
        file, _, anchor = target.partition("#")
        resolved = (document.parent / file).resolve() if file else document
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{document.relative_to(REPO)}: " + "; ".join(broken)


def test_links_are_found():
    """The link pattern sees the README's links and images (a pattern that found none would pass)."""
    links = relative_links(REPO / "README.md")
    assert "docs/configuration.md" in links and any(link.endswith(".png") for link in links)


def test_readme_is_a_front_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "make demo" in text and "make test" in text  # CI runs `make test`


def test_configuration_tables_are_generated_from_the_schema():
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    document = config_docs.DOCUMENT.read_text()
    assert config_docs.render(document, schema) == document, "run: python -m vitprobe.pipeline.config_docs"


def test_the_check_fails_when_the_schema_changes():
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    document = config_docs.DOCUMENT.read_text()
    schema["properties"]["figures"]["properties"]["filters"]["default"] = 64
    assert config_docs.render(document, schema) != document
    assert "| `figures.filters` | integer | `64` |" in config_docs.render(document, schema)


def test_every_schema_key_is_described():
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    keys = config_docs.schema_keys(schema)
    assert len(keys) > 60 and any(path == "models.<key>.spec.depth" for path, _ in keys)
    assert [path for path, sub in keys if not sub.get("description")] == []


def test_every_environment_variable_is_in_the_table_and_read_in_one_module():
    """A VITPROBE_* name in the code is one of `VARIABLES`; a variable of the table is read
    through `vitprobe.environment` only."""
    names = {v.name for v in VARIABLES}
    code = [*(REPO / "src").rglob("*.py"), *(REPO / "workflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk")]
    code.append(REPO / "Snakefile")
    used, read_elsewhere = set(), []
    for path in code:
        text = path.read_text()
        used |= set(re.findall(r"\bVITPROBE_[A-Z0-9_]+", text))
        if path.name != "environment.py":
            read_elsewhere += [f"{path.name}: {n}" for n in names if re.search(rf"environ(\.get\(|\[)\s*[\"']{n}[\"']", text)]
    assert used and used <= names, f"undocumented: {used - names}"
    assert not read_elsewhere


def test_benchmark_records_live_in_records():
    """Every record sits in benchmarks/records/ (the folder docs/performance.md cites), and
    every benchmark script that writes one defaults its --out there."""
    stray = [p.name for p in (REPO / "benchmarks").iterdir() if p.suffix in (".json", ".md")]
    assert not stray
    assert any((REPO / "benchmarks" / "records").glob("*.json"))
    for script in (REPO / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and node.args and getattr(node.args[0], "value", None) == "--out":
                default = next(k.value for k in node.keywords if k.arg == "default")
                assert "RECORDS" in ast.unparse(default), f"{script.name}: --out defaults to {ast.unparse(default)}"

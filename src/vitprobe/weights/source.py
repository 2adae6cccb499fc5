"""What a weights string names: ``random``, ``hf-hub:<owner>/<repo>``, ``https://...``,
``package:<module>/<file>`` or a local path. The one parser behind the config checks, the rules
and the fetch code."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import WeightsError

KINDS = ("random", "hf-hub", "https", "package", "path")
# A Hugging Face repo id: owner/name, each of letters, digits, '-', '_', '.', not starting with a dot.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
HELP = "Give 'random', hf-hub:<owner>/<repo>, an https:// URL, package:<module>/<file> or a local .safetensors/.npz/.onnx path."


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # one of KINDS
    value: str  # the repo id, URL, package path or file path ('' for random)

    @property
    def is_local(self) -> bool:
        return self.kind == "path"


def parse_weights(text: str) -> WeightsSource:
    """Parse a weights string; raises `WeightsError` (naming the string and the fix) for an
    unsupported URL scheme, a malformed hub id or a malformed package path."""
    if text == "random":
        return WeightsSource("random", "")
    if text.startswith("hf-hub:"):
        repo = text.removeprefix("hf-hub:")
        if not _HUB_ID.match(repo):
            raise WeightsError(
                f"{text}: malformed Hugging Face id; expected hf-hub:<owner>/<repo>, e.g. hf-hub:timm/deit_base_patch16_224.fb_in1k"
            )
        return WeightsSource("hf-hub", repo)
    if text.startswith("package:"):
        module, _, rel = text.removeprefix("package:").partition("/")
        if not module or not rel:
            raise WeightsError(f"{text}: expected package:<module>/<file inside the package>")
        return WeightsSource("package", text.removeprefix("package:"))
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1) != "https":
            raise WeightsError(f"{text}: weights are only downloaded over https (not {scheme.group(1)}://). {HELP}")
        return WeightsSource("https", text)
    return WeightsSource("path", text)

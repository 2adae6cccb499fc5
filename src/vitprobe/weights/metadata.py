"""What a local checkpoint says it is: the ``config.json`` beside it.

timm writes ``config.json`` next to its hub weights (``architecture``, ``num_classes``, the
``pretrained_cfg``); a ``transformers`` checkpoint has its own (``model_type`` and the sizes). Either
names the architecture, so a config entry or `vitprobe.load_model` may leave ``arch`` out for such a
file. Reading it needs no Keras (the config checks run it before any job).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import WeightsError
from .hf import hf_config_arch


def checkpoint_arch(weights: str) -> tuple[str, dict]:
    """(architecture, `ViTSpec` overrides) from the ``config.json`` in the folder of ``weights``.

    Raises:
        WeightsError: no ``config.json`` there, or one that names no architecture vitprobe reads.
    """
    config_path = Path(weights).parent / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"{weights}: no architecture given and no config.json beside the file to read it from; "
            "give the architecture (models.<key>.arch, or load_model's arch)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{config_path}: not valid JSON ({e})") from None
    if "architecture" in config:  # timm
        overrides = {"num_classes": config["num_classes"]} if "num_classes" in config else {}
        return config["architecture"], overrides
    if "model_type" in config:  # transformers
        return hf_config_arch(config, str(config_path))
    raise WeightsError(
        f"{config_path}: names no architecture (neither timm's 'architecture' nor transformers' 'model_type'); "
        "give the architecture (models.<key>.arch)"
    )

"""Reference side of the weight-layout tests: the key names and shapes of timm's own state dict.

A hub checkpoint of a timm model holds exactly ``model.state_dict()``'s tensors (timm writes
them from it), so these are the names and shapes a downloaded file has. Built on the ``meta``
device: no weights, no init cost. Runs in its own process (see timm_reference.py).

Usage: python timm_state_keys.py job.json out.json
job.json: [{"id", "model", "kwargs"}]; out.json: {id: {key: shape}}.
"""

import json
import sys
from pathlib import Path

import timm
import torch  # noqa: F401  (import torch before anything else)


def main(job_file: str, out_file: str) -> None:
    layouts = {}
    for entry in json.loads(Path(job_file).read_text()):
        with torch.device("meta"):
            model = timm.create_model(entry["model"], pretrained=False, **entry.get("kwargs", {}))
        layouts[entry["id"]] = {key: list(value.shape) for key, value in model.state_dict().items()}
    Path(out_file).write_text(json.dumps(layouts, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])

import json

import pytest

from helpers import PARITY_CASES, run_reference


@pytest.fixture(scope="session")
def timm_reference(tmp_path_factory):
    """Run every timm parity case once per session (in its own process); returns the folder."""
    reference_cases = [{k: c[k] for k in ("id", "model", "kwargs", "checkpoint_kwargs") if k in c} for c in PARITY_CASES]
    out = tmp_path_factory.mktemp("timm_ref")
    cases_file = out / "cases.json"
    cases_file.write_text(json.dumps(reference_cases))
    run_reference("timm_reference.py", cases_file, out)
    return out

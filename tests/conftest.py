"""Shared test setup: the repo root on sys.path, one CPU thread (the suite runs beside other work), and
tiny configurations so the whole suite stays fast on 2 cores."""
import importlib
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)

# flags for a full main() run that takes a few seconds at most
TINY_ARGS = ["--device", "cpu", "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
             "--pretrain-steps", "5", "--pretrain-batch", "16", "--train-problems", "200",
             "--eval-problems", "8", "--curve-problems", "4", "--eval-samples", "4", "--k", "2",
             "--prompts", "4", "--group", "4", "--minibatches", "2", "--epochs", "2", "--log-every", "1",
             "--seeds", "0", "--rollout-lag", "0"]


@pytest.fixture
def tiny_args():
    return list(TINY_ARGS)


def under_ci() -> bool:
    """CI=true, as .ci/run and most CI services set it."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes of CPU; run under CI or with RUN_SLOW=1")


def pytest_collection_modifyitems(config, items):
    # the slow tests (a reduced pretraining, minutes on a shared core) run in CI, or where asked for
    if under_ci() or os.environ.get("RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: CI runs it (or set RUN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def require(module: str, what: str):
    """module, imported, for the tests of a real trainer (integrations/requirements.txt installs them). Without it
    the test skips, with a reason the summary shows; in CI (CI=true, as .ci/run and most CI services set it) it
    must be there, so a missing trainer fails instead of passing silently."""
    if under_ci():
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{what} needs {module}: install it as .ci/run does")

"""The core imports nothing from experiments/ or integrations/ at import time (the layout: the core
is the tutorial, the other two rooms build on it), and the tutorial stays short and narrow."""
import subprocess
import sys

from conftest import ROOT

CORE = ("nano_aspo", "config", "tokenizer", "sampler", "pretrain", "model", "rewards", "batched",
        "stats")


def test_importing_the_core_loads_no_module_of_experiments_or_integrations():
    code = ("import sys\nimport " + ", ".join(CORE) + "\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('experiments', 'integrations')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_the_tutorial_is_at_most_600_lines_of_at_most_100_characters():
    lines = (ROOT / "nano_aspo.py").read_text().splitlines()
    assert len(lines) <= 600, len(lines)
    assert [i + 1 for i, line in enumerate(lines) if len(line) > 100] == []

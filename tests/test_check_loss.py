"""integrations/check_loss.py (the per-token weight checker) on the built-in methods, the verl plugin and the
broken examples integrations/broken_aspo.py; bad input is one line and exit 2."""
import ast
import importlib.util
import itertools
import json
import sys
import types

import pytest
import torch

from integrations import check_loss
import nano_aspo as na
from conftest import ROOT, require

PLUGIN = f"{ROOT / 'integrations' / 'verl_aspo.py'}:compute_policy_loss_aspo"
BROKEN = ROOT / "integrations" / "broken_aspo.py"


def run(capsys, *argv):
    """check_loss.main -> (exit code, stdout lines, stderr lines)."""
    rc = check_loss.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out.strip("\n").split("\n"), [ln for ln in cap.err.split("\n") if ln]


def mismatch_lines(out):
    """The lines after the table that name a branch that differs."""
    return [ln for ln in out if ": w = " in ln]


def write(tmp_path, source, name="user_loss.py"):
    path = tmp_path / name
    path.write_text(source)
    return path


# a built-in method behind verl's calling convention: per-token advantages, the clip settings from config
WRAPPED = """import nano_aspo as na

def loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None):
    assert loss_agg_mode == "token-mean" and advantages.shape == log_prob.shape
    return na.policy_loss("{method}", log_prob, old_log_prob, advantages[:, 0], response_mask, config.clip_ratio_low,
                          config["clip_ratio_high"], config.get("clip_ratio_c", 3.0))[0], {{}}
"""


@pytest.mark.parametrize("method,reference", itertools.product(check_loss.REFERENCES, check_loss.REFERENCES))
def test_each_builtin_passes_against_itself_and_fails_against_the_others(capsys, tmp_path, method, reference):
    # non-default flags: the probes follow them and the wrapped loss must read them from verl's config names
    path = write(tmp_path, WRAPPED.format(method=method))
    rc, out, err = run(capsys, f"{path}:loss", "--reference", reference, "--eps-low", "0.1", "--eps-high", "0.35",
                       "--clip-c", "4")
    assert err == []
    assert f"closest built-in method: {method} (0 of 18 branches differ" in "\n".join(out)
    lines = mismatch_lines(out)
    if method == reference:
        assert rc == 0 and lines == [] and out[-1] == f"all 18 branches match {reference} within 0.0001"
    else:
        assert rc == 1 and lines and all(ln.startswith(("A > 0, ", "A < 0, ")) for ln in lines), lines
        assert out[-len(lines) - 1] == f"{len(lines)} of 18 branches differ from {reference}:"


@pytest.mark.parametrize("method,reference,want", [
    # the methods that differ least: each pair differs exactly where ASPO.md says
    ("aspo-hardneg", "aspo", ["A < 0, r > c: w = 0, aspo expects c"]),
    ("posmean", "grpo", ["A > 0, mixed row: its token at r: w = rbar, grpo expects r",
                         "A > 0, mixed row: its tokens at r = 1: w = rbar, grpo expects 1"]),
    ("grpo", "aspo", ["A > 0, r < 1/c: w = r, aspo expects c", "A > 0, 1/c <= r < 1-eps_low: w = r, aspo expects 1/r",
                      "A > 0, 1-eps_low <= r < 1: w = r, aspo expects 1/r",
                      "A > 0, 1 <= r < 1+eps_high: w = r, aspo expects 1/r",
                      "A > 0, mixed row: its token at r: w = r, aspo expects 1/r",
                      "A < 0, r > c: w = 0, aspo expects c"]),
    # the two halves of the flip (§13): each is aspo but on the other half
    ("aspo", "aspo-fall", ["A > 0, 1 <= r < 1+eps_high: w = 1/r, aspo-fall expects r"]),
    ("aspo", "aspo-rise", ["A > 0, r < 1/c: w = c, aspo-rise expects r",
                           "A > 0, 1/c <= r < 1-eps_low: w = 1/r, aspo-rise expects r",
                           "A > 0, 1-eps_low <= r < 1: w = 1/r, aspo-rise expects r",
                           "A > 0, mixed row: its token at r: w = 1/r, aspo-rise expects r"]),
    # verl's CISPO: a floor of 1 - eps_low and a ceiling of 1 + eps_high where grpo stops the gradient
    ("grpo", "cispo-verl", ["A > 0, r < 1/c: w = r, cispo-verl expects 0.8, 0.8",
                            "A > 0, 1/c <= r < 1-eps_low: w = r, cispo-verl expects 0.8, 0.8",
                            "A > 0, 1+eps_high <= r < c: w = 0, cispo-verl expects 1.28, 1.28",
                            "A > 0, r > c: w = 0, cispo-verl expects 1.28, 1.28",
                            "A < 0, r < 1/c: w = 0, cispo-verl expects 0.8, 0.8",
                            "A < 0, 1/c <= r < 1-eps_low: w = 0, cispo-verl expects 0.8, 0.8",
                            "A < 0, 1+eps_high <= r < c: w = r, cispo-verl expects 1.28, 1.28",
                            "A < 0, r > c: w = 0, cispo-verl expects 1.28, 1.28"]),
])
def test_mismatch_lines_name_the_branch_and_both_weights(capsys, method, reference, want):
    rc, out, _ = run(capsys, method, "--reference", reference)
    assert rc == 1 and mismatch_lines(out) == want


def test_unflipped_ratio_is_caught_on_the_positive_branches(capsys):
    rc, out, _ = run(capsys, f"{BROKEN}:aspo_unflipped")
    lines = mismatch_lines(out)
    assert rc == 1
    assert "A > 0, 1/c <= r < 1-eps_low: w = r, aspo expects 1/r" in lines
    assert all(ln.startswith("A > 0, ") for ln in lines), lines  # its negative side is right
    # grpo's positive weights beside aspo's negative side: of the built-ins, aspo-rise (which flips only
    # 1 <= r <= 1 + eps_high) is one branch away, and by a smaller gap than grpo (its hard dual-clip)
    assert "closest built-in method: aspo-rise (1 of 18 branches differ" in "\n".join(out)


def test_dual_clip_through_detached_logp_is_caught_below_one_over_c(capsys):
    rc, out, _ = run(capsys, f"{BROKEN}:aspo_logp_dualclip")
    lines = mismatch_lines(out)
    assert rc == 1 and len(lines) == 1, lines
    assert lines[0].startswith("A > 0, r < 1/c: w = -") and lines[0].endswith("aspo expects c")  # the sign flipped


def test_verl_plugin_is_aspo_for_any_valid_flags(capsys):
    # plain torch where verl is not installed; inside verl (its agg_loss, its ActorConfig) where it is (CI)
    # the README's defaults, the paper's (§9), and flags where 1+eps_high = c (those two ranges merge: 16 branches)
    for flags, n in (([], 18), (["--eps-low", "0.2", "--eps-high", "0.2", "--clip-c", "3"], 18),
                     (["--eps-low", "0.05", "--eps-high", "0.5", "--clip-c", "1.5"], 16)):
        rc, out, err = run(capsys, PLUGIN, "--reference", "aspo", *flags)
        assert rc == 0 and err == [] and out[-1] == f"all {n} branches match aspo within 0.0001", flags
    rc, out, _ = run(capsys, PLUGIN, "--reference", "grpo")
    assert rc == 1 and mismatch_lines(out)


# --- bad input: one line on stderr, exit 2 --------------------------------------------------------------------
GOOD_HEADER = "import torch\n\ndef fn(old_log_prob, log_prob, advantages, response_mask{extra}):\n"


@pytest.mark.parametrize("source,argv_tail,says", [
    (None, ["missing.py:fn"], "no such file"),
    ("x = 1\n", ["{path}:fn"], "has no function 'fn'"),
    ("fn = 3\n", ["{path}:fn"], "'fn' in"),
    ("def fn(:\n", ["{path}:fn"], "importing"),
    (GOOD_HEADER.format(extra="") + "    raise RuntimeError('boom\\nsecond line')\n", ["{path}:fn"], "RuntimeError: boom"),
    (GOOD_HEADER.format(extra="") + "    return -(advantages * log_prob)\n", ["{path}:fn"], "not a scalar loss"),
    (GOOD_HEADER.format(extra="") + "    return 'loss'\n", ["{path}:fn"], "not a scalar loss"),
    (GOOD_HEADER.format(extra="") + "    return torch.tensor(1.0)\n", ["{path}:fn"], "no gradient"),
    (GOOD_HEADER.format(extra="") + "    return (log_prob * float('nan')).sum()\n", ["{path}:fn"],
     "it returned a loss of nan at r = 1 for A > 0"),
    (GOOD_HEADER.format(extra="") + "    return -(advantages * log_prob).sum(-1)\n", ["{path}:fn"],
     "shape (3,), not a scalar loss"),  # one loss per row (user_loss tries 3 rows)
    # a finite loss with a nan gradient: the branch torch.where leaves out backpropagates 0 * nan
    (GOOD_HEADER.format(extra="") + "    x = (-log_prob - 1).sqrt()\n"
     "    return torch.where(log_prob < 1, log_prob, x).sum()\n",
     ["{path}:fn"], "its gradient at r = 1 is not finite for A > 0"),
    (GOOD_HEADER.format(extra="") + "    return (log_prob * 0).sum() + log_prob.sum().detach()\n", ["{path}:fn"],
     "gradient at r = 1 is zero"),
    (GOOD_HEADER.format(extra=", beta") + "    return log_prob.sum()\n", ["{path}:fn"], "'beta'"),
    ("def fn(log_prob, advantages):\n    return log_prob.sum()\n", ["{path}:fn"], "old_log_prob"),
    (None, ["aspo", "--clip-c", "1"], "--clip-c"),
    (None, ["ppo"], "ppo"),
    (None, ["{path}"], "expected FILE.py:FUNCTION"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, source, argv_tail, says):
    path = write(tmp_path, source) if source is not None else tmp_path / "user_loss.py"
    rc, out, err = run(capsys, *[a.format(path=path) for a in argv_tail])
    assert rc == 2 and out == [""]
    assert len(err) == 1 and err[0].startswith("check_loss.py: error: ") and says in err[0], err


def test_other_required_mask_parameters_get_an_all_true_mask(capsys, tmp_path):
    # and rollout_is_weights (verl >= 0.6.0 passes it) is None: no rollout correction here
    path = write(tmp_path, "import torch\n\ndef fn(old_log_prob, log_prob, advantages, response_mask, loss_mask, "
                           "rollout_is_weights):\n"
                           "    assert rollout_is_weights is None\n"
                           "    assert loss_mask.dtype == torch.bool and bool(loss_mask.all())\n"
                           "    m = response_mask * loss_mask\n"
                           "    return (-advantages * torch.exp(log_prob - old_log_prob) * m).sum() / m.sum()\n")
    rc, out, _ = run(capsys, f"{path}:fn", "--reference", "grpo")
    # r A without any clip: grpo's weights inside the clip range, not where grpo clips
    assert rc == 1 and "A > 0, 1 <= r < 1+eps_high" not in "\n".join(mismatch_lines(out))
    assert "A > 0, 1+eps_high <= r < c: w = r, grpo expects 0" in mismatch_lines(out)


def test_integrations_import_nothing_of_experiments():
    # integrations/ is what a user copies into a trainer: experiments/ may use it, not the reverse
    for path in (ROOT / "integrations").glob("*.py"):
        nodes = ast.walk(ast.parse(path.read_text()))
        imported = [n for node in nodes if isinstance(node, (ast.Import, ast.ImportFrom))
                    for n in ([node.module or ""] if isinstance(node, ast.ImportFrom)
                              else [a.name for a in node.names])]
        assert not [n for n in imported if n.split(".")[0] == "experiments"], path.name


def test_plot_draws_a_png(capsys, tmp_path):
    require("matplotlib", "check_loss --plot")
    rc, out, _ = run(capsys, "aspo", "--plot", tmp_path / "w.png")
    assert rc == 0 and (tmp_path / "w.png").stat().st_size > 10_000

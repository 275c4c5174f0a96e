"""Behaviour that had no test: the KL term inside training, evaluation of many members in chunks,
the summary's outcomes per seed, the console without --quiet, and runs.py's report on the committed
runs."""

import contextlib
import io
import json

import pytest
import torch

import batched
import nano_aspo as na
import rewards
import stats
from conftest import ROOT, TINY_ARGS
from experiments import runs
from model import GPT
from test_rl import _alternating_score, _cfg, _model


def _kl_run(monkeypatch, kl_coef, steps=1, reference_seed=0, **kw):
    """`steps` rl_steps of one aspo member from the same start, prompts and seeds: its parameters,
    and whether its reference (for kl_coef > 0: the start, as train_rl builds it, or another
    policy's weights) kept its weights."""
    _alternating_score(monkeypatch)
    cfg = _cfg(kl_coef=kl_coef, **kw)
    model = _model(cfg)
    reference = _model(cfg, seed=reference_seed).eval() if kl_coef else None
    kept = {k: v.clone() for k, v in (reference or model).state_dict().items()}
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    for step in range(steps):
        problems = [rewards.make_problems(cfg.prompts, step, "train")]
        gens = [torch.Generator().manual_seed(step)]
        na.rl_step(model, opt_, problems, cfg, ["aspo"], gens, reference)
    now = (reference or model).state_dict()
    same = reference is None or all(torch.equal(kept[k], now[k]) for k in kept)
    return torch.cat([p.detach().flatten() for p in model.parameters()]), same


def test_kl_term_is_zero_on_policy_and_pulls_back_off_policy(monkeypatch):
    # mu = 1: the only update is at pi_theta = pi_ref, where k3's gradient (1 - pi_ref / pi_theta)
    # is 0, so the first update equals the one without the KL term (up to rounding)
    plain, _ = _kl_run(monkeypatch, 0.0, minibatches=1, epochs=1)
    with_kl, kept = _kl_run(monkeypatch, 0.5, minibatches=1, epochs=1)
    assert kept and (with_kl - plain).abs().max() < 1e-6
    # ... but a reference other than the policy pulls on that same update: the term reads it
    other, kept = _kl_run(monkeypatch, 0.5, reference_seed=1, minibatches=1, epochs=1)
    assert kept and (other - plain).abs().max() > 1e-4
    # mu = 4 over two steps: the policy leaves the start, the KL term acts, the reference stays put
    plain, _ = _kl_run(monkeypatch, 0.0, steps=2)
    with_kl, kept = _kl_run(monkeypatch, 0.5, steps=2)
    assert kept and (with_kl - plain).abs().max() > 1e-4


def test_evaluation_in_member_chunks_equals_one_evaluation_of_the_stack(monkeypatch):
    cfg = _cfg(eval_samples=4, k=2)
    models = []
    for seed in range(3):  # three different members, so a chunk that mixes them up shows
        torch.manual_seed(seed)
        models.append(GPT(na.model_config(cfg)).state_dict())
    stack = batched.StackedGPT(na.model_config(cfg), models)
    problems = na.task_problems(cfg, "test")[:6]
    seeds = [11, 12, 13]
    whole = na.evaluate(stack, problems, cfg, seeds, show=2)
    # 24 rows per member: chunks of 2 members, then 1 (the rows of 2 members fit in 50)
    monkeypatch.setattr(batched, "EVAL_ROWS", 50)
    chunked = na.evaluate(stack, problems, cfg, seeds, show=2)
    assert len(chunked) == 3
    for a, b in zip(chunked, whole):
        assert a.pop("samples") == b.pop("samples")
        assert a == pytest.approx(b, abs=1e-6)
    assert whole[0] != whole[1]  # the members differ, so the comparison can fail


@pytest.fixture(scope="module")
def loud_run(tmp_path_factory):
    """A run of grpo and aspo on two seeds without --quiet: its console and summary."""
    out = tmp_path_factory.mktemp("loud")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert na.main(TINY_ARGS + ["--steps", "2", "--eval-every", "1", "--out-dir", str(out),
                                    "--seeds", "3,4", "--methods", "grpo,aspo"]) == 0
    return console.getvalue(), json.loads((out / "summary.json").read_text())


def test_summary_outcomes_follow_each_runs_final_careful_share(loud_run):
    _, summary = loud_run
    finals = {(r["method"], r["seed"]): r["final"]["careful_hard"] for r in summary["runs"]}
    rules = {"forgot": lambda x: x < stats.FORGOT_BELOW, "escaped": lambda x: x >= stats.ESCAPED_AT}
    assert [(o["method"], o["outcome"]) for o in summary["outcomes"]] == [
        (m, name) for name in rules for m in ("grpo", "aspo")]
    for o in summary["outcomes"]:
        flags = [rules[o["outcome"]](finals[o["method"], s]) for s in (3, 4)]
        assert (o["locked"], o["n"]) == (sum(flags), 2) and o["share"] == sum(flags) / 2
        lo, hi = o["wilson95"]
        assert 0 <= lo <= o["share"] <= hi <= 1
    for c in summary["outcomes_paired"]:
        assert (c["method"], c["baseline"], c["seeds"]) == ("aspo", "grpo", [3, 4])
        rule = rules[c["outcome"]]
        aspo, grpo = ([rule(finals[m, s]) for s in (3, 4)] for m in ("aspo", "grpo"))
        assert c["b"] == sum(a and not g for a, g in zip(aspo, grpo))
        assert c["c"] == sum(g and not a for a, g in zip(aspo, grpo))
        assert c["diff"] == (c["b"] - c["c"]) / 2


def test_no_outcomes_without_hard_problems(tmp_path, tiny_args, capsys):
    assert na.main(tiny_args + ["--steps", "1", "--quiet", "--out-dir", str(tmp_path),
                                "--eval-easy-share", "1", "--methods", "grpo,aspo"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["outcomes"] == [] and summary["outcomes_paired"] == []


def test_without_quiet_the_console_shows_samples(loud_run, tmp_path, tiny_args, capsys):
    console, _ = loud_run
    lines = console.splitlines()
    # three held-out problems at the start, then three per run at each evaluation (steps 1 and 2),
    # each with its --eval-samples 4 completions marked right or wrong (one may hold a newline:
    # count marks)
    for who, n in (
        ("init", 3),
        ("grpo", 3 * 2 * 2),
        ("aspo", 3 * 2 * 2),
    ):  # 2 seeds x 2 evaluations
        assert sum(ln.startswith(f"      {who} ") and " -> " in ln for ln in lines) == n, who
    assert console.count("✓") + console.count("✗") == 4 * (3 + 24)
    assert (
        sum(ln.split()[:2] in (["grpo", "s3"], ["aspo", "s4"]) for ln in lines) == 4
    )  # a console line per step
    assert (
        na.main(
            tiny_args + ["--steps", "2", "--eval-every", "1", "--quiet", "--out-dir", str(tmp_path)]
        )
        == 0
    )
    assert " -> " not in capsys.readouterr().out


def test_runs_report_regenerates_the_committed_report_byte_for_byte(tmp_path, monkeypatch, capsys):
    # the committed runs, seen through links from a fresh experiments/runs (the report names its
    # runs by that relative path), so that report.md is written there and not over the committed one
    committed = ROOT / "experiments" / "runs"
    root = tmp_path / "experiments" / "runs"
    root.mkdir(parents=True)
    for entry in committed.iterdir():
        if entry.name != "report.md":
            (root / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    assert runs.main(["report", "--root", "experiments/runs"]) == 0
    assert (root / "report.md").read_bytes() == (committed / "report.md").read_bytes()

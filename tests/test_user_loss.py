"""integrations/user_loss.py and integrations/verl_aspo.py: a verl-style loss called as verl calls it, the
plugin equal to policy_loss("aspo") and registered with a stand-in verl, and --methods FILE.py:FUNCTION
in the RL loop."""
import importlib.util
import json
import re
import sys
import types

import pytest
import torch

import nano_aspo as na
from conftest import ROOT
from integrations.user_loss import VerlConfig, one_line, register_user_loss, user_loss
from test_check_loss import GOOD_HEADER, PLUGIN, write
from test_rl import _alternating_score


def _load_plugin(name="verl_aspo_under_test"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "integrations" / "verl_aspo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verl_plugin_loss_and_gradient_equal_policy_loss_aspo():
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(6, 7, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.randn(6, 7, generator=gen, dtype=torch.float64)  # r from ~0.05 to ~20
    adv = torch.tensor([1.5, -0.5, 0.0, 2.0, -1.0, 0.7], dtype=torch.float64)
    mask = torch.ones(6, 7, dtype=torch.float64)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    config = VerlConfig(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    loss, metrics = _load_plugin().compute_policy_loss_aspo(old, logp, adv[:, None].expand(-1, 7), mask, config=config)
    want, _ = na.policy_loss("aspo", logp, old, adv, mask, 0.2, 0.28, 3.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    clip = dict(eps_low=0.2, eps_high=0.28, clip_c=3.0)  # the weights, through the plugin called as verl calls it
    register_user_loss(PLUGIN, na.USER_LOSSES)  # as main does for --methods FILE.py:FUNCTION
    torch.testing.assert_close(na.token_weights(PLUGIN, logp, old, adv, mask, **clip),
                               na.token_weights("aspo", logp, old, adv, mask, **clip), rtol=1e-12, atol=1e-12)
    assert set(metrics) == {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"}


@pytest.mark.parametrize("version,returns", [("0.7.0.dev", 2), ("0.6.1", 2), ("0.6.0", 4), ("0.5.0", 4)])
def test_verl_plugin_registers_aspo_and_returns_what_that_verl_unpacks(monkeypatch, version, returns):
    # a stand-in verl with the two names the plugin imports: registration at import, agg_loss used with verl's
    # config.global_batch_info (verl >= 0.7 passes global token counts through it)
    registry, agg_calls = {}, []

    def agg_loss(loss_mat, loss_mask, loss_agg_mode, **global_batch_info):
        agg_calls.append((loss_agg_mode, global_batch_info))
        return (loss_mat * loss_mask).sum() / global_batch_info.get("batch_num_tokens", loss_mask.sum())

    core_algos = types.SimpleNamespace(register_policy_loss=lambda name: lambda fn: registry.setdefault(name, fn),
                                       agg_loss=agg_loss)
    verl = types.ModuleType("verl")
    verl.__version__ = version
    for name, module in (("verl", verl), ("verl.trainer", types.ModuleType("verl.trainer")),
                         ("verl.trainer.ppo", types.ModuleType("verl.trainer.ppo")),
                         ("verl.trainer.ppo.core_algos", core_algos)):
        monkeypatch.setitem(sys.modules, name, module)
    plugin = _load_plugin()
    assert registry == {"aspo": plugin.compute_policy_loss_aspo,
                        "aspo_sampler": plugin.compute_policy_loss_aspo_sampler}
    config = VerlConfig(clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=0.28, clip_ratio_c=3.0,
                           global_batch_info={"batch_num_tokens": 8})
    logp = torch.zeros(2, 3, requires_grad=True)
    out = plugin.compute_policy_loss_aspo(torch.zeros(2, 3), logp, torch.ones(2, 3), torch.ones(2, 3),
                                          loss_agg_mode="seq-mean-token-mean", config=config)
    assert len(out) == returns
    assert agg_calls == [("seq-mean-token-mean", {"batch_num_tokens": 8})]
    assert out[0].item() == pytest.approx(-6 / 8)  # r = 1: every positive token's loss is -A/p = -1


# --- your loss in the toy: --methods FILE.py:FUNCTION --------------------------------------------------------------
def test_a_bad_user_method_is_a_one_line_error_before_any_work(tmp_path, capsys):
    path = write(tmp_path, GOOD_HEADER.format(extra="") + "    return -(advantages * log_prob)\n")
    for spec, what in ((f"{tmp_path / 'missing.py'}:fn", "missing\\.py:fn: no such file"),
                       (f"{path}:fn", "not a scalar loss")):  # called once before any training
        assert na.main(["--methods", f"grpo,{spec}", "--out-dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(f"error: --methods .*{what}", err[0]), err
        assert not (tmp_path / "o").exists()  # stopped before pretraining or any output
    assert na.parse_config(["--methods", f"grpo,{PLUGIN}"]).method_list == ["grpo", PLUGIN]


@pytest.mark.parametrize("body,says", [
    # one loss per completion: a scalar on the one-row batch validation used to try
    ("    return -(advantages * log_prob * response_mask).sum(-1)\n",
     "it returned a tensor of shape (3,), not a scalar loss"),
    # a loss that breaks on the negative side only
    ("    assert (advantages >= 0).all(), 'negative'\n    return -(advantages * log_prob).mean()\n",
     "it raised AssertionError: negative"),
])
def test_user_loss_is_tried_on_several_rows_and_both_signs(tmp_path, body, says):
    path = write(tmp_path, GOOD_HEADER.format(extra="") + body)
    want = f"^{re.escape(str(path))}:fn: {re.escape(says)}$"
    registry = {}
    with pytest.raises(ValueError, match=want):  # what main prints after "--methods "
        register_user_loss(f"{path}:fn", registry)
    assert registry == {}


def test_main_trains_a_user_loss_beside_the_builtins(tmp_path, tiny_args, monkeypatch):
    _alternating_score(monkeypatch)  # every group half right: both signs of A, every token has a weight
    out = tmp_path / "run"
    argv = tiny_args + ["--steps", "2", "--eval-every", "1", "--quiet", "--out-dir", str(out), "--seeds", "3",
                        "--lr", "1e-2", "--methods", f"grpo,aspo,{PLUGIN}"]
    assert na.main(argv) == 0
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["method"], r["seed"]) for r in summary["runs"]] == [("grpo", 3), ("aspo", 3), (PLUGIN, 3)]
    assert all("error" not in r for r in summary["runs"])
    assert {c["method"] for c in summary["comparison"]} == {"aspo", PLUGIN}  # each paired with grpo
    by = {(d["method"], d["step"]): d for d in lines}
    assert sorted(step for method, step in by if method == PLUGIN) == [0, 1, 2]
    # the same checkpoint, prompts and sampling seeds, and the same weights (§5): the plugin trains as aspo does
    assert by["aspo", 1]["abs_log_ratio"] > 1e-3  # the policy moved, so the weights mattered
    for key in ("reward", "entropy", "abs_log_ratio", "below1_pos", "clip_low_neg", "grad_norm", "eval_entropy"):
        assert by[PLUGIN, 2][key] == pytest.approx(by["aspo", 2][key], abs=1e-5), key


def test_user_loss_has_policy_loss_positional_args_and_equals_aspo():
    gen = torch.Generator().manual_seed(2)
    old = -torch.rand(4, 5, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.randn(4, 5, generator=gen, dtype=torch.float64)
    adv, mask = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64), torch.ones(4, 5, dtype=torch.float64)
    got = user_loss(PLUGIN)(logp, old, adv, mask, 0.1, 0.35, 4.0)
    assert got.item() == pytest.approx(na.policy_loss("aspo", logp, old, adv, mask, 0.1, 0.35, 4.0)[0].item(), rel=1e-12)


def test_one_line_keeps_the_type_and_the_first_line():
    assert one_line(RuntimeError("boom\nsecond line")) == "RuntimeError: boom"
    assert one_line(ValueError()) == "ValueError"

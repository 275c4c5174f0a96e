"""The metrics the verl plugin (integrations/verl_aspo.py) and the TRL trainer
(integrations/trl_aspo.py) report, by value, on one batch where every token's clip region is known
by construction."""

import importlib
import types
from collections import defaultdict

import pytest
import torch

from conftest import ROOT
from integrations.user_loss import VerlConfig
from test_trl_aspo import trl_aspo  # noqa: F401, F811 (the fixture: integrations/trl_aspo.py inside TRL)

EPS_LOW, EPS_HIGH, CLIP_C = 0.2, 0.28, 3.0
# (advantage, ratios, mask) per completion; every region has its own count, so that two metrics
# swapped fail. Row 0: hard-clipped above 1+eps_high, dual below 1/c, inside, and a padding token
# that would be hard-clipped; row 1: hard-clipped below 1-eps_low (three), dual above c; row 2:
# A = 0, so none of its tokens counts
ROWS = [(+1.0, [1.5, 0.2, 1.0, 2.0], [1, 1, 1, 0]),
        (-1.0, [0.5, 4.0, 0.7, 0.75], [1, 1, 1, 1]),
        (0.0, [2.0, 0.1, 1.0, 5.0], [1, 1, 1, 1])]
VALID = 11
# shares of valid tokens: A > 0 above 1+eps_high; A < 0 below 1-eps_low; the dual-clip
HIGH, LOW, DUAL = 1 / VALID, 3 / VALID, 2 / VALID


def batch():
    """old log-probs, log-probs, per-token advantages, the mask and the ratios of ROWS, (3, 4)
    each."""
    ratios = torch.tensor([r for _, r, _ in ROWS], dtype=torch.float64)
    old = -torch.linspace(0.5, 2.5, 12, dtype=torch.float64).view(3, 4)
    adv = torch.tensor([a for a, _, _ in ROWS], dtype=torch.float64)[:, None].expand(3, 4)
    mask = torch.tensor([m for _, _, m in ROWS], dtype=torch.float64)
    return old, old + ratios.log(), adv, mask, ratios


def test_the_batch_is_what_its_comments_say():
    _, _, adv, mask, r = batch()
    valid = mask > 0
    assert valid.sum() == VALID
    share = lambda hit: (hit & valid).sum().item() / VALID
    assert (
        share((adv > 0) & (r > 1 + EPS_HIGH)) == HIGH
        and share((adv < 0) & (r < 1 - EPS_LOW)) == LOW
    )
    assert share(((adv > 0) & (r < 1 / CLIP_C)) | ((adv < 0) & (r > CLIP_C))) == DUAL


def test_verl_plugin_clip_fractions_and_kl_by_value():
    spec = importlib.util.spec_from_file_location(
        "verl_aspo_metrics", ROOT / "integrations" / "verl_aspo.py"
    )
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)  # inside verl where it is installed (CI), plain torch otherwise
    old, logp, adv, mask, r = batch()
    config = VerlConfig(
        clip_ratio=EPS_LOW, clip_ratio_low=EPS_LOW, clip_ratio_high=EPS_HIGH, clip_ratio_c=CLIP_C
    )
    out = plugin.compute_policy_loss_aspo(old, logp, adv, mask, config=config)
    if len(out) == 4:  # verl < 0.6.1 unpacks a 4-tuple
        metrics = dict(
            zip(
                ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"),
                map(float, out[1:]),
            )
        )
    else:
        metrics = out[1]
    kl = (
        -(r.log() * mask).sum().item() / VALID
    )  # verl's ppo_kl: the mean of -log r over valid tokens
    # verl's names: pg_clipfrac the hard clip (weight 0, either sign), pg_clipfrac_lower the
    # dual-clip
    assert metrics == pytest.approx(
        {"actor/pg_clipfrac": HIGH + LOW, "actor/pg_clipfrac_lower": DUAL, "actor/ppo_kl": kl},
        abs=1e-9,
    )


def test_trl_trainer_weights_and_clip_metrics_by_value(trl_aspo):  # noqa: F811
    # the method TRL's _compute_loss calls for the weights, on a trainer reduced to what it reads:
    # the clip settings, TRL's metric store, and an accelerator of one process (reduce = identity)
    trainer = types.SimpleNamespace(
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        args=types.SimpleNamespace(aspo_clip_c=CLIP_C),
        model=types.SimpleNamespace(training=True),
        _metrics={"train": defaultdict(list)},
        accelerator=types.SimpleNamespace(reduce=lambda x, reduction: x),
    )
    trainer._log_clip_fractions = types.MethodType(
        trl_aspo.ASPOTrainer._log_clip_fractions, trainer
    )
    old, logp, adv, mask, r = batch()
    w = trl_aspo.ASPOTrainer.get_gamma_weights(
        trainer, adv[:, :1].float(), (logp - old).float(), mask.float(), None
    )
    # ASPO.md §5 on ROWS: A > 0: 0 above 1+eps_high, c below 1/c, 1/r = 1 at r = 1; A < 0: 0 below
    # 1-eps_low, c above c; A = 0: 1 (no gradient anyway)
    want = torch.tensor([[0.0, CLIP_C, 1.0, 0.0], [0.0, CLIP_C, 0.0, 0.0], [1.0] * 4])
    torch.testing.assert_close(w, want)
    logged = trainer._metrics["train"]
    assert logged.keys() == {
        f"clip_ratio/{n}" for n in ("low_mean", "high_mean", "region_mean", "dual_mean")
    }
    got = {key: v[0] for key, v in logged.items()}
    assert all(len(v) == 1 for v in logged.values())
    assert got == pytest.approx(
        {
            "clip_ratio/low_mean": LOW,
            "clip_ratio/high_mean": HIGH,
            "clip_ratio/region_mean": LOW + HIGH,
            "clip_ratio/dual_mean": DUAL,
        },
        abs=1e-6,
    )

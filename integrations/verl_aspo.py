"""ASPO (Wang et al., arXiv 2510.06062) as a verl policy loss. One self-contained file: copy it into your
verl fork (or put this folder on PYTHONPATH) and select it with

    actor_rollout_ref.actor.policy_loss.loss_mode=aspo
    actor_rollout_ref.model.external_lib=verl_aspo     # verl's workers import this module, which registers "aspo"

Per-token gradient weights w(r, sign A), r = pi_theta / pi_old (nano-aspo's ASPO.md §5):
    A > 0 (flipped):   1/r for 1/c <= r <= 1+eps_high;  c below 1/c (soft dual-clip);  0 above 1+eps_high
    A < 0 (PPO-clip):  r for 1-eps_low <= r <= c;       c above c (soft dual-clip);    0 below 1-eps_low
with eps_low, eps_high, c read from verl's actor config (clip_ratio_low, clip_ratio_high, clip_ratio_c).
Check it (and any edit of it) with nano-aspo's checker, which needs no verl:

    python integrations/check_loss.py integrations/verl_aspo.py:compute_policy_loss_aspo --reference aspo

verl is imported only when present: without it the function is plain torch and aggregates by token-mean.
verl changed what a policy loss returns in 0.6.1 (from a 4-tuple to (loss, metrics)); this file returns
whichever the installed verl unpacks, and refuses a verl outside 0.5 to 0.9 in one line. verl 0.9.x also
imports it from a "verl.plugins" entry point (aspo = "verl_aspo") of an installed package. Leave verl's
algorithm.rollout_correction.bypass_mode off: it replaces loss_mode by verl's own "bypass_mode" loss.
"""
import re

import torch

try:
    import verl
except ImportError:
    verl = None

# the releases this file was run inside (tests/test_verl_real.py pins the newest). The policy-loss registry and
# signature it relies on exist from 0.5; a later minor release may change either, so it is refused, not guessed at.
SUPPORTED_MINORS = ((0, 5), (0, 9))
TESTED = "0.5.0, 0.6.0, 0.6.1, 0.7.0, 0.7.1, 0.8.0, 0.9.0, 0.9.1"


def version_tuple(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def check_version(version: str) -> None:
    """ImportError, one line, naming the installed and the supported versions, before anything of verl is used."""
    if not SUPPORTED_MINORS[0] <= version_tuple(version)[:2] <= SUPPORTED_MINORS[1]:
        raise ImportError(f"verl_aspo supports verl 0.5 to 0.9 (run inside {TESTED}); installed: verl {version}")


if verl is not None:
    check_version(verl.__version__)
    from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss

# verl < 0.6.1 unpacks (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower); 0.6.1 and later (pg_loss, metrics dict)
RETURNS_TUPLE_OF_4 = verl is not None and version_tuple(verl.__version__) < (0, 6, 1)


def _masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def compute_policy_loss_aspo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                             config=None, rollout_is_weights=None):
    """verl's policy-loss signature: (bs, response_length) tensors, advantages per token, verl's actor config."""
    if config is None:
        raise ValueError("ASPO reads its clip settings from verl's actor config; none was passed")
    eps_low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    eps_high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    c = config.get("clip_ratio_c", 3.0)
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)  # as verl and the ASPO reference
    ratio = torch.exp(log_ratio)

    # soft dual-clip (both signs): -A c logp has gradient weight exactly c, instead of 0 (hard clip) or 1/r -> inf
    soft = -advantages * c * log_prob
    # A > 0: p = min(r, 1+eps_high); -A (p / sg(p)) / sg(p) has value -A/p and gradient weight 1/r (0 where p is
    # the constant 1+eps_high). sg = detach.
    p = torch.clamp(ratio, max=1 + eps_high)
    positive = torch.where(ratio < 1 / c, soft, -advantages * (p / p.detach()) / p.detach())
    # A < 0: PPO-clip (weight r inside, 0 below 1-eps_low), then the soft dual-clip above c
    ppo = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    negative = torch.where(ratio > c, soft, ppo)
    pg_losses = torch.where(advantages > 0, positive, negative)

    if rollout_is_weights is not None:  # verl's rollout correction, applied as in its vanilla loss
        pg_losses = pg_losses * rollout_is_weights
    if verl is not None:
        pg_loss = agg_loss(loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode,
                           **(config.get("global_batch_info", None) or {}))
    elif loss_agg_mode == "token-mean":
        pg_loss = _masked_mean(pg_losses, response_mask)
    else:
        raise ValueError(f"without verl only loss_agg_mode='token-mean' is available (got {loss_agg_mode!r})")

    with torch.no_grad():
        pos = (advantages > 0).float()
        # verl's names: pg_clipfrac = tokens the hard clip cuts (weight 0), pg_clipfrac_lower = tokens the
        # dual-clip bounds, here the soft one of either sign (weight c)
        pg_clipfrac = _masked_mean(torch.where(advantages > 0, ratio > 1 + eps_high, ratio < 1 - eps_low).float()
                                   * (advantages != 0), response_mask)
        pg_clipfrac_lower = _masked_mean(pos * (ratio < 1 / c) + (advantages < 0) * (ratio > c), response_mask)
        ppo_kl = _masked_mean(-log_ratio, response_mask)
    if RETURNS_TUPLE_OF_4:
        return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower
    return pg_loss, {"actor/pg_clipfrac": pg_clipfrac.item(), "actor/ppo_kl": ppo_kl.item(),
                     "actor/pg_clipfrac_lower": pg_clipfrac_lower.item()}


if verl is not None:
    register_policy_loss("aspo")(compute_policy_loss_aspo)

"""Two ASPO losses that run, train and look plausible, but weight positive tokens wrongly: the patterns
found in two public "ASPO" implementations, written as verl policy losses. Training curves do not reveal
either; the per-token weight view (ASPO.md §3) does, in seconds:

    python integrations/check_loss.py integrations/broken_aspo.py:aspo_unflipped      # exit 1: A > 0 weighted r, not 1/r
    python integrations/check_loss.py integrations/broken_aspo.py:aspo_logp_dualclip  # exit 1: A > 0 below 1/c pushed down

Their negative side and aggregation are correct (shared below), so each differs from ASPO in one line.
The correct loss is integrations/verl_aspo.py.
"""
import torch


def aspo_unflipped(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None):
    """ASPO's positive side as 'minus A, times the flipped ratio pi_old / pi_theta (held fixed), times log pi'."""
    ratio, eps_low, eps_high, c = _ratio_and_clip(old_log_prob, log_prob, config)
    # BUG: meant pi_old / pi_theta = exp(old - new); but exp(-(old - new)) = exp(new - old) is the ratio itself,
    # so positive tokens are weighted r (GRPO's weight), not 1/r
    flipped = torch.exp(-(old_log_prob - log_prob)).clamp(max=c)
    positive = -advantages * (flipped * (ratio <= 1 + eps_high)).detach() * log_prob
    return _with_aspo_negatives(positive, ratio, log_prob, advantages, response_mask, eps_low, eps_high, c)


def aspo_logp_dualclip(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None):
    """ASPO's flip is right here; its soft dual-clip below 1/c is meant to keep the loss value at -A c."""
    ratio, eps_low, eps_high, c = _ratio_and_clip(old_log_prob, log_prob, config)
    p = torch.clamp(ratio, max=1 + eps_high)
    # BUG: log_prob / log_prob.detach() has the value 1 but the gradient grad(log pi) / log pi, and log pi < 0:
    # the weight is c / log pi, negative, so positive tokens whose probability fell are pushed further down
    soft = -advantages * c * log_prob / log_prob.detach()
    positive = torch.where(ratio < 1 / c, soft, -advantages * (p / p.detach()) / p.detach())
    return _with_aspo_negatives(positive, ratio, log_prob, advantages, response_mask, eps_low, eps_high, c)


def _ratio_and_clip(old_log_prob, log_prob, config):
    eps_low, eps_high, c = config.clip_ratio_low, config.clip_ratio_high, config.get("clip_ratio_c", 3.0)
    return torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0)), eps_low, eps_high, c


def _with_aspo_negatives(positive, ratio, log_prob, advantages, response_mask, eps_low, eps_high, c):
    """ASPO's negative side (PPO-clip, soft dual-clip above c; correct) and the token-mean over valid tokens."""
    ppo = torch.maximum(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    negative = torch.where(ratio > c, -advantages * c * log_prob, ppo)
    per_token = torch.where(advantages > 0, positive, negative)
    return (per_token * response_mask).sum() / response_mask.sum().clamp(min=1), {}

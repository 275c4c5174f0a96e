"""What every update logs beside its loss (nano_aspo.policy_loss): clip fractions and ratio
statistics by the sign of A (ASPO.md §7), and the weights given to stale right tokens (§12-§13).
Pure functions of detached tensors, (B, T) or (S, B, T) with a leading member dimension."""
import math

import torch


@torch.no_grad()
def ratio_metrics(ratio, A, mask, eps_low, eps_high, clip_c, w_b) -> dict:
    """Clip fractions and ratio statistics by the sign of A (§7), over (B, T): a float each, or a
    list over members. 'dual' is r > c for A < 0 and r < 1/c for A > 0 (where the soft dual-clip of
    §5 gives c); 'below1' is r < 1, where the flip 1/r and grpo's r differ in direction. eps: floats
    or per-token (B, T). A member without tokens of a sign gets nan for that sign. The stale tokens
    (§12): positive ones with r < 0.8, < 0.5 and < 1/3, and the mean weight grpo (r) and aspo
    (min(1/r, c)) give them, times the behaviour weight w_b (1 but under the decoupled anchor)."""
    dims, valid = (-2, -1), mask > 0
    m = {"abs_log_ratio": torch.where(valid, ratio.log().abs(), 0).sum(dims)
         / valid.sum(dims).clamp(min=1)}
    for name, sign in (("pos", A > 0), ("neg", A < 0)):
        tokens = valid & sign
        n = tokens.sum(dims)
        if not n.any():
            continue
        def share(hit):
            return (hit & tokens).sum(dims) / n  # 0/0 = nan for a member without such tokens
        m.update({f"clip_low_{name}": share(ratio < 1 - eps_low),
                  f"clip_high_{name}": share(ratio > 1 + eps_high),
                  f"clip_dual_{name}": share(ratio < 1 / clip_c if name == "pos"
                                             else ratio > clip_c),
                  f"below1_{name}": share(ratio < 1), f"below08_{name}": share(ratio < 0.8),
                  f"below05_{name}": share(ratio < 0.5), f"below03_{name}": share(ratio < 1 / 3),
                  f"ratio_min_{name}": torch.where(tokens, ratio, math.inf).amin(dims)
                  .where(n > 0, math.nan),
                  f"ratio_mean_{name}": torch.where(tokens, ratio, 0).sum(dims) / n,
                  f"ratio_max_{name}": torch.where(tokens, ratio, -math.inf).amax(dims)
                  .where(n > 0, math.nan)})
    m = {key: v.tolist() for key, v in m.items()}
    # grpo's weight is r on a stale right token, aspo's 1/r (c below 1/c)
    return m | stale_weights({"grpo": w_b * ratio, "aspo": w_b * (1 / ratio).clamp(max=clip_c)},
                             ratio, A, mask)


@torch.no_grad()
def stale_weights(weights: dict, ratio, A, mask) -> dict:
    """The mean of each weight (B, T) of `weights` over the stale right tokens, A > 0 with r < 0.8
    and with r < 1/3 (§13: the dose each gives them): "w_NAME_below08_pos" and "..._below03_pos", a
    float or a list over members (nan for a member without such tokens); none where no member has
    such tokens."""
    m = {}
    for cut_name, cut in (("below08", 0.8), ("below03", 1 / 3)):
        low = (mask > 0) & (A > 0) & (ratio < cut)
        for name, w in weights.items() if low.any() else ():
            m[f"w_{name}_{cut_name}_pos"] = (torch.where(low, w, 0).sum((-2, -1))
                                             / low.sum((-2, -1))).tolist()
    return m

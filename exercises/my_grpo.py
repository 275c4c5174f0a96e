"""Task 2 of exercises/README.md: GRPO's clipped loss, written as a verl policy loss (ASPO.md §4;
nano_aspo.py, "the losses, side by side"). Check it: python exercises/check.py 2"""
import torch  # noqa: F401 (yours will use it)


def my_grpo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
            config=None):
    """GRPO's policy loss: PPO-clip with clip-higher and the dual-clip, aggregated by token-mean.

    old_log_prob, log_prob: (B, T) log-probs of the sampled tokens under the weights that sampled
      them and under the weights being trained (only log_prob carries a gradient);
    advantages: (B, T), every token of a completion carrying its completion's A (§1);
    response_mask: (B, T), 1 on the completion's tokens, 0 on padding;
    config: the clip settings under verl's names: config.clip_ratio_low (eps_low),
      config.clip_ratio_high (eps_high) and config.clip_ratio_c (the dual-clip constant c).
    Returns the scalar loss: minus the mean over valid tokens of J_t, where, with
    r = exp(log_prob - old_log_prob),
      J_t = min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), and for A < 0: max(J_t, c A).
    """
    raise NotImplementedError("task 2: write my_grpo in exercises/my_grpo.py")

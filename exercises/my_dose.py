"""Task 5 of exercises/README.md: your own dose for stale right tokens (ASPO.md §12-§13).
Check it: python exercises/check.py 5"""
import torch  # noqa: F401 (yours will use it)


def my_dose(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
            config=None):
    """GRPO's policy loss (task 2) but for one kind of token: a right token whose probability fell
    since it was sampled (A > 0 and r < 1) gets a gradient weight w(r) of your choosing instead of
    GRPO's r (a term x.detach() * log_prob has weight x). Every other token keeps GRPO's weight,
    so that your run differs from the grpo run beside it by your dose alone.
    """
    raise NotImplementedError("task 5: write my_dose in exercises/my_dose.py")

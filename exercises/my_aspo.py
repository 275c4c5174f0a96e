"""Task 3 of exercises/README.md: ASPO's flip, written as a verl policy loss (ASPO.md §5;
nano_aspo.py, "the losses, side by side"). Check it: python exercises/check.py 3"""
import torch  # noqa: F401 (yours will use it)


def my_aspo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
            config=None):
    """ASPO's policy loss, with the arguments of my_grpo (task 2). Its gradient is
    -(1/N) sum_t A_t w_t grad log_prob_t over the N valid tokens, with the weight w_t:
      A > 0: 1/r where 1/c <= r <= 1 + eps_high; c where r < 1/c; 0 where r > 1 + eps_high;
      A < 0: r where 1 - eps_low <= r <= c; 0 where r < 1 - eps_low; c where r > c.
    A term x.detach() * log_prob has weight x; ASPO.md §5 shows the reference's way to weight a
    token 1/r with a finite loss value.
    """
    raise NotImplementedError("task 3: write my_aspo in exercises/my_aspo.py")

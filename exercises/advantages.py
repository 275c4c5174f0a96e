"""Task 1 of exercises/README.md: group advantages (ASPO.md §1; nano_aspo.py, "rewards and group
advantages"). Check it: python exercises/check.py 1"""
import torch


def group_advantages(rewards: torch.Tensor, use_std: bool = True) -> torch.Tensor:
    """rewards (P, G): row p holds the rewards of the G completions sampled for prompt p.
    Returns the advantages (P, G): each reward minus its group's mean, divided by its group's
    standard deviation plus 1e-6 (the sample std, as torch.std computes by default and verl uses),
    or not divided at all where use_std is False (Dr. GRPO). Every token of completion (p, i) is
    then trained with the advantage [p, i]."""
    raise NotImplementedError("task 1: write group_advantages in exercises/advantages.py")

"""ASPO (Wang et al., arXiv 2510.06062) for TRL's asynchronous GRPO, AsyncGRPOTrainer
(trl.experimental.async_grpo, TRL 1.16). It samples through a vLLM server while it trains, so its
ratio r = pi_theta / pi_sampler is stale by the queue (up to max_staleness weight syncs): the
sampler anchor (nano-aspo's ASPO.md §12). Put this file and trl_aspo.py (its weights and version
gate) on PYTHONPATH, or copy both, and use the pair below in place of AsyncGRPOConfig /
AsyncGRPOTrainer:

    from trl_async_aspo import ASPOAsyncGRPOConfig, ASPOAsyncGRPOTrainer
    args = ASPOAsyncGRPOConfig(output_dir="out", epsilon=0.2, epsilon_high=0.28, aspo_clip_c=3.0)
    trainer = ASPOAsyncGRPOTrainer(model="Qwen/Qwen3-4B", reward_funcs=reward_fn, args=args,
                                   train_dataset=dataset)

AsyncGRPOTrainer has no loss_type: its compute_loss writes PPO-clip inline, so trl_aspo's
ASPOTrainer (a GRPOTrainer) never reaches it. ASPOAsyncGRPOTrainer overrides compute_loss and calls
TRL's own with the model's per-token log-probs detached: TRL's forward (tree packing), its
normalization (per token over the accumulated batch, across processes), its MoE auxiliary loss and
its metrics all run unchanged, and its PPO-clip carries no gradient. It then adds ASPO's term,
-w A log pi with ASPO's detached per-token weight w(r, sign A) (trl_aspo.aspo_weights, ASPO.md §5),
on the same log-probs and with the same normalization, at value 0 (x - sg(x)). The loss TRL logs is
its PPO-clip's value; the gradient is ASPO's. TRL's clip metrics count the tokens ASPO zeroes too
(its hard clips are PPO-clip's); clip_ratio/dual_mean adds ASPO's soft dual-clip (weight c).

The override leans on how TRL 1.16.0's compute_loss reads the model (one call, outputs.log_probs,
selected by inputs["token_index"] >= 0) and normalizes; another TRL minor release is refused at
import (trl_aspo.check_version), and tests/test_trl_async_aspo.py checks the gradient against
nano-aspo's ASPO inside TRL's own compute_loss.
"""
from dataclasses import dataclass, field

import torch
from trl.experimental.async_grpo import AsyncGRPOConfig, AsyncGRPOTrainer
from trl_aspo import aspo_weights, clip_shares


@dataclass
class ASPOAsyncGRPOConfig(AsyncGRPOConfig):
    """AsyncGRPOConfig with ASPO's dual-clip constant; epsilon and epsilon_high are ASPO's eps_low
    and eps_high."""

    aspo_clip_c: float = field(default=3.0, metadata={
        "help": "ASPO's dual-clip constant c (> 1): weight c for positive tokens below 1/c and "
                "negative ones above c"})

    def __post_init__(self):
        if not self.aspo_clip_c > 1:
            raise ValueError(f"aspo_clip_c must be > 1 (got {self.aspo_clip_c})")
        super().__post_init__()


class ASPOAsyncGRPOTrainer(AsyncGRPOTrainer):
    """AsyncGRPOTrainer whose per-token gradient weight is ASPO's (module docstring). Takes an
    ASPOAsyncGRPOConfig."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, ASPOAsyncGRPOConfig):
            raise TypeError("ASPOAsyncGRPOTrainer needs args=ASPOAsyncGRPOConfig(...), got "
                            f"{type(config).__name__}")
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        kept = {}

        def detached(*args, **kwargs):
            """The model as TRL calls it, its log-probs kept for ASPO and handed to TRL detached."""
            outputs = model(*args, **kwargs)
            kept["log_probs"] = outputs.log_probs
            outputs.log_probs = outputs.log_probs.detach()
            return outputs

        loss = super().compute_loss(detached, inputs, return_outputs, num_items_in_batch)
        selected = inputs["token_index"] >= 0  # TRL's loss terms; the rest pads the row
        log_probs = kept["log_probs"].flatten()[inputs["token_index"][selected]]
        advantages = inputs["advantages"][selected]
        # log-ratio clamped to [-20, 20] as TRL's GRPOTrainer, verl and the ASPO reference clamp it
        log_ratio = torch.clamp(log_probs.detach() - inputs["old_log_probs"][selected], -20.0, 20.0)
        r = torch.exp(log_ratio)
        weights = aspo_weights(advantages, r, self.epsilon_low, self.epsilon_high,
                               self.args.aspo_clip_c)
        # TRL's normalization: the tokens of the whole batch, over processes and accumulation steps
        tokens_per_rank = inputs["global_n_tokens"][0] / self.accelerator.num_processes
        aspo = -(weights * advantages * log_probs).sum() / tokens_per_rank.clamp(min=1.0).float()
        aspo = aspo / self.current_gradient_accumulation_steps
        with torch.no_grad():
            shares = clip_shares(self.accelerator, advantages, r, torch.ones_like(r),
                                 self.epsilon_low, self.epsilon_high, self.args.aspo_clip_c)
            self._metrics["train"]["clip_ratio/dual_mean"].append(shares["dual_mean"])
        return loss + aspo - aspo.detach()

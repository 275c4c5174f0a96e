"""ASPO (Wang et al., arXiv 2510.06062) for TRL's GRPOTrainer. One self-contained file: copy it next to your
training script (or put this folder on PYTHONPATH) and use ASPOConfig / ASPOTrainer in place of GRPOConfig /
GRPOTrainer:

    from trl_aspo import ASPOConfig, ASPOTrainer
    args = ASPOConfig(output_dir="out", epsilon=0.2, epsilon_high=0.28, aspo_clip_c=3.0, beta=0.001)
    trainer = ASPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=dataset)

Per-token gradient weights w(r, sign A), r = pi_theta / pi_old (nano-aspo's ASPO.md §5):
    A > 0 (flipped):   1/r for 1/c <= r <= 1+eps_high;  c below 1/c (soft dual-clip);  0 above 1+eps_high
    A < 0 (PPO-clip):  r for 1-eps_low <= r <= c;       c above c (soft dual-clip);    0 below 1-eps_low
with eps_low = epsilon, eps_high = epsilon_high (TRL's names) and c = aspo_clip_c.

TRL has no loss hook: `loss_type` picks a loss from an if/elif chain inside the private `_compute_loss`. One of
its branches, "vespo", computes per_token_loss = -phi * A * log pi with a detached weight phi from the method
`get_gamma_weights`; its gradient is exactly -phi A grad log pi, so returning ASPO's w there as phi gives ASPO's
gradient, and everything else in `_compute_loss` stays TRL's own: its token-mean normalization over the
accumulated batch (that of "dapo", TRL's default, and ASPO's §3), the KL term (beta), the entropy bonus, the
off-policy and entropy masks, and its metrics. ASPOTrainer overrides that one method; ASPOConfig fixes
loss_type to "vespo" and adds the dual-clip constant. The loss TRL logs is the value of that surrogate,
-(1/N) sum w A log pi, not ASPO's -(1/N) sum A / min(r, 1+eps_high); its gradient is ASPO's.

Differences from TRL's built-in losses: vLLM's importance-sampling correction multiplies w here (TRL skips it for
"vespo"), only in TRL's token modes (token_truncate, token_mask: it rejects the others for "vespo"); dropout is
off by default (disable_dropout=True), since with dropout the ratio r is not 1 on the first update and ASPO's
weights 1/r and c react to that noise. Written against TRL 1.16 (the private `_compute_loss` may change in any
minor release, so another version is refused at import).
"""
from dataclasses import dataclass, field

import torch
import trl
from trl import GRPOConfig, GRPOTrainer

SUPPORTED = "1.16"  # the minor release whose _compute_loss this was written against and tested inside
LOSS_TYPE = "vespo"  # the branch of TRL's _compute_loss whose weight ASPOTrainer supplies


def check_version(version: str) -> None:
    """ImportError, one line, naming the installed and the supported versions, before anything of TRL is used."""
    if version.split(".")[:2] != SUPPORTED.split("."):
        raise ImportError(f"trl_aspo supports TRL {SUPPORTED}.x (tested with 1.16.0); installed: TRL {version}")


check_version(trl.__version__)


@dataclass
class ASPOConfig(GRPOConfig):
    """GRPOConfig with ASPO's dual-clip constant; epsilon and epsilon_high are ASPO's eps_low and eps_high."""

    aspo_clip_c: float = field(default=3.0, metadata={"help": "ASPO's dual-clip constant c (> 1): weight c for "
                                                              "positive tokens below 1/c and negative ones above c"})
    loss_type: str = field(default=LOSS_TYPE, metadata={"help": "fixed: the TRL branch ASPOTrainer supplies"})
    disable_dropout: bool = field(default=True, metadata={"help": "keep r = 1 on the first update (see module)"})

    def __post_init__(self):
        if self.loss_type != LOSS_TYPE:
            raise ValueError(f"ASPOConfig uses loss_type={LOSS_TYPE!r} (ASPOTrainer supplies that branch's weight); "
                             f"got {self.loss_type!r}")
        if not self.aspo_clip_c > 1:
            raise ValueError(f"aspo_clip_c must be > 1 (got {self.aspo_clip_c})")
        if self.importance_sampling_level != "token":
            raise ValueError("ASPO weighs each token by its own ratio: importance_sampling_level must be 'token'")
        super().__post_init__()


def aspo_weights(advantages, r, eps_low, eps_high, clip_c):
    """ASPO's per-token gradient weight w(r, sign A) (module docstring). A = 0 tokens get w = 1 (they have no
    gradient anyway)."""
    c = torch.full_like(r, clip_c)
    positive = torch.where(r < 1 / clip_c, c, torch.where(r <= 1 + eps_high, 1 / r, torch.zeros_like(r)))
    negative = torch.where(r > clip_c, c, torch.where(r >= 1 - eps_low, r, torch.zeros_like(r)))
    return torch.where(advantages > 0, positive, torch.where(advantages < 0, negative, torch.ones_like(r)))


def clip_shares(accelerator, advantages, r, mask, eps_low, eps_high, clip_c):
    """{name: share of the valid tokens, over all processes} for the hard clips (weight 0:
    low_mean, A < 0 below 1-eps_low; high_mean, A > 0 above 1+eps_high; region_mean, either) and
    ASPO's soft dual-clip (weight c: dual_mean, A > 0 below 1/c or A < 0 above c)."""
    low = (advantages < 0) & (r < 1 - eps_low)
    high = (advantages > 0) & (r > 1 + eps_high)
    dual = ((advantages > 0) & (r < 1 / clip_c)) | ((advantages < 0) & (r > clip_c))
    shares = {}
    for name, hit in (("low_mean", low), ("high_mean", high), ("region_mean", low | high),
                      ("dual_mean", dual)):
        totals = torch.stack([(hit * mask).sum(), mask.sum()]).float()
        totals = accelerator.reduce(totals, reduction="sum")
        shares[name] = (totals[0] / totals[1].clamp(min=1.0)).item()
    return shares


class ASPOTrainer(GRPOTrainer):
    """GRPOTrainer whose policy-gradient weight is ASPO's (module docstring). Takes an ASPOConfig."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(config, ASPOConfig):
            raise TypeError(f"ASPOTrainer needs args=ASPOConfig(...), got {type(config).__name__}")
        super().__init__(*args, **kwargs)

    @torch.no_grad()
    def get_gamma_weights(self, advantages, log_ratio_per_token, mask, importance_sampling_ratio, **vespo_params):
        """Called by TRL's _compute_loss for loss_type "vespo" (vespo_params, VESPO's own, are unused); returns the
        detached (B, T) weight of per_token_loss = -w * A * log pi, and logs the clip fractions."""
        # log-ratio clamped to [-20, 20] as TRL, verl and the ASPO reference clamp it
        r = torch.exp(torch.clamp(log_ratio_per_token, -20.0, 20.0))
        w = aspo_weights(advantages, r, self.epsilon_low, self.epsilon_high, self.args.aspo_clip_c)
        self._log_clip_fractions(advantages, r, mask)
        if importance_sampling_ratio is not None:  # vLLM's correction, as TRL applies it to its other losses
            w = w * importance_sampling_ratio
        return w

    def _log_clip_fractions(self, advantages, r, mask):
        """TRL's clip metrics under its names (the share of valid tokens the hard clips zero: A < 0 below
        1-eps_low, A > 0 above 1+eps_high), and ASPO's soft dual-clip (weight c) as clip_ratio/dual_mean."""
        metrics = self._metrics["train" if self.model.training else "eval"]
        shares = clip_shares(self.accelerator, advantages, r, mask, self.epsilon_low,
                             self.epsilon_high, self.args.aspo_clip_c)
        for name, share in shares.items():
            metrics[f"clip_ratio/{name}"].append(share)

    def log(self, logs, start_time=None):
        metrics = self._metrics["train" if self.model.training else "eval"]
        if "vespo/phi_seq_mean" in metrics:  # the mean of ASPO's w, logged by TRL under VESPO's name
            metrics["aspo/weight_mean"] = metrics.pop("vespo/phi_seq_mean")
        super().log(logs, start_time)

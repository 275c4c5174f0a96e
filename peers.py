"""The peers: what asynchronous and off-policy trainers ship against stale rollouts (ASPO.md §13).

Each is a per-token loss of the form of nano_aspo.policy_loss (§3): its gradient is -A w grad logp,
and a method is its weight w(r, sign A), r the ratio against the anchor the run chose (§12). They
are the dose ladder's rungs from other people's code, each as its authors' code writes it for both
signs of A; nano_aspo.policy_loss looks them up here by name (`--methods grpo,aspo,cispo`).

    method      A > 0                         A < 0                       follows
    cispo       min(r, eps_max)               min(r, eps_max)             TRL 1.16 / MiniMax-M1
    cispo-verl  clamp(r, 1-eps_low, 1+eps_h)  the same clamp              verl 0.9.1 loss_mode=cispo
    icepop      grpo's where lo <= r <= hi,   the same                    IcePop / masked IS
                else 0
    m2po        grpo's on the tokens kept by  the same                    AReaL's M2PO mask
                the second-moment budget

So the weight on a stale right token (r < 1, A > 0) is r for cispo (and grpo), at least 1 - eps_low
= 0.8 for cispo-verl (the floor), 0 below lo = 0.5 for icepop, and r or 0 for m2po.
"""
import torch

CISPO_EPS_MAX = 5.0  # TRL's recommended epsilon_high for loss_type="cispo" (GRPOConfig's docs)
ICEPOP_BOUNDS = (0.5, 5.0)  # IcePop's [alpha, beta]; verl's rollout_is_threshold "0.5_5.0"
M2PO_BUDGET = 0.04  # M2PO's tau_M2: the largest (log r)^2 go until the mean of the rest is below


def unit(logp):
    """Value 1, gradient grad logp: `weight * unit(logp)` is a term whose gradient weight is weight
    (the detached factor of CISPO's sg(...) A log pi; the value differs, the gradient does not)."""
    return (logp - logp.detach()).exp()


# --- the losses: (B, T) or (S, B, T) per-token terms; grpo is nano_aspo's PPO-clip term (§4) ---
def cispo(logp, ratio, A, mask, grpo, eps_low, eps_high, eps_max=CISPO_EPS_MAX, **_):
    """CISPO as TRL writes it (trl/trainer/grpo_trainer.py, _compute_loss, loss_type "cispo"):
    -sg(min(r, epsilon_high)) A log pi, every token kept, both signs (MiniMax-M1's form, its mask
    all ones). No lower clip: a stale right token is weighted r, as in grpo."""
    return -A * ratio.clamp(max=eps_max).detach() * unit(logp)


def cispo_verl(logp, ratio, A, mask, grpo, eps_low, eps_high, **_):
    """CISPO as verl writes it (verl/trainer/ppo/core_algos.py, compute_policy_loss_cispo):
    -sg(clamp(r, 1 - eps_low, 1 + eps_high)) A log pi, both signs: a floor of 1 - eps_low."""
    return -A * ratio.clamp(1 - eps_low, 1 + eps_high).detach() * unit(logp)


def icepop(logp, ratio, A, mask, grpo, eps_low, eps_high, bounds=ICEPOP_BOUNDS, **_):
    """Masked importance sampling (IcePop): grpo's loss where lo <= r <= hi, nothing outside (the
    token is dropped, not truncated). verl 0.9.1 applies the mask to the behaviour weight of its
    decoupled correction (trainer/ppo/rollout_corr_helper.py, compute_rollout_correction_weights,
    rollout_is_threshold "0.5_5.0"); here it reads the ratio the method sees, which under the
    sampler anchor at a step's first update is that same pi_prox / pi_behaviour."""
    lo, hi = bounds
    return grpo * ((ratio >= lo) & (ratio <= hi))


def m2po_keep(ratio, mask, budget):
    """AReaL's M2PO mask (areal/engine/ppo/actor.py, _apply_m2po_masking and _get_m2po_loss_mask):
    sort a member's valid tokens by m2 = (log r)^2, drop the largest until the mean m2 of those
    left is below `budget`; where no suffix gets there, all but the smallest go. Returns the kept
    tokens (bool, the shape of mask); each member of (S, B, T) gets its own budget."""
    m2 = torch.where(mask > 0, ratio.detach().log() ** 2, -1.0).flatten(-2)  # (..., N); -1 last
    sorted_m2, order = m2.sort(-1, descending=True)
    left = (sorted_m2 >= 0).flip(-1).cumsum(-1).flip(-1)  # valid tokens from position i on
    mean_left = sorted_m2.clamp(min=0).flip(-1).cumsum(-1).flip(-1) / left.clamp(min=1)
    under = (mean_left < budget) & (left > 0)
    drop = torch.where(under.any(-1), under.int().argmax(-1), left[..., 0] - 1)  # (...,)
    keep = torch.arange(m2.size(-1), device=m2.device) >= drop[..., None]
    return torch.zeros_like(keep).scatter(-1, order, keep).view_as(mask) & (mask > 0)


def m2po(logp, ratio, A, mask, grpo, eps_low, eps_high, m2_budget=M2PO_BUDGET, **_):
    """M2PO as AReaL masks it: grpo's loss on the kept tokens, averaged over the kept tokens only
    (AReaL's loss divides by the new mask's count), so a kept token's weight is r x N / N_kept.
    Here m2 reads the ratio the method sees: at a step's first update under the sampler anchor
    that is AReaL's pi_prox / pi_behaviour."""
    keep = m2po_keep(ratio, mask, m2_budget)
    dims = (-2, -1)
    scale = mask.sum(dims) / (keep * mask).sum(dims).clamp(min=1)  # (...,): N / N_kept
    return grpo * keep * scale[..., None, None]


LOSSES = {"cispo": cispo, "cispo-verl": cispo_verl, "icepop": icepop, "m2po": m2po}


def options(cfg) -> dict:
    """The peers' keywords from the Config (--cispo-eps-max, --icepop-bounds, --m2po-budget)."""
    return {"eps_max": cfg.cispo_eps_max, "bounds": cfg.icepop_bound_pair,
            "m2_budget": cfg.m2po_budget}

"""nano-aspo: GRPO and ASPO side by side on a tiny GPT that learns to add.

The tutorial of one RL run, top to bottom: tokens and sampling, rewards and group advantages, the
losses (the heart: every method is a per-token weight on the same gradient), the RL step; then the
config, the start policy, held-out evaluation, the loop and a short main that runs every method
from the same start on the same seeds. The math is ASPO.md (beside this file); "§n" cites its
sections. ASPO is Wang et al., "Asymmetric Importance Sampling Policy Optimization", 2510.06062.

What it leaves out, so that the algorithm is all there is to read:
- the task (rewards.py) is addition with two ways to answer, and the reward is exact 0/1;
- the policy is a 100k-parameter GPT (model.py), pretrained on an imperfect teacher;
- sampler and trainer are one process, and a stale lag L (§12) samples with weights L steps old:
  the first update of a batch has r = 1 (every method the same gradient) at lag 0, and u = 1 under
  the decoupled anchor at any lag, but r != 1 under the sampler anchor at L > 0; no entropy bonus,
  no value model, and by default no KL term (§5);
- many seeds at once are a batched model (batched.py); the closing statistics are stats.py.

    python nano_aspo.py                  # GRPO and ASPO from the same start, paired
    python nano_aspo.py --seeds 0,1,2    # three paired seeds
    python nano_aspo.py --help
"""
# %%
import collections
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import batched
import peers
import stats
from metrics import ratio_metrics, stale_weights  # what every update logs (§7, §13)
from config import Config, block_size, max_new_tokens, model_config, pick_device, task_problems
from config import parse_config as parse_flags
from model import GPT
from pretrain import load_start
from sampler import Rollout, entropy_of, sample
from rewards import CAREFUL, score
# the task's text as tokens, one per character: "407+038=" -> BOS 4 0 7 + 0 3 8 =, and the answer
# "c544" (careful way, sum's digits least significant first) or "n534" (shortcut), then EOS
from tokenizer import completion_text, prompt_ids


# %% --- sampling: G completions per prompt (sampler.py, KV cache), and the training path ----
def token_logps(model: GPT, roll: Rollout, rows: torch.Tensor, temperature: float):
    """The training path: log-probs (len(rows), T) of the completion tokens under `model`, by one
    plain forward pass (no cache) over prompt + completion, and the detached entropy (len(rows), T)
    at each of those positions (the shipped loss's per-token clip reads it, §5)."""
    seq = roll.sequences[rows]
    logits = model(seq[:, :-1]).float() / temperature  # (b, L-1, V): position j predicts token j+1
    T = roll.tokens.size(1)
    pos = roll.prompt_lens[rows, None] - 1 + torch.arange(T, device=seq.device)  # (b, T)
    logp_all = F.log_softmax(logits.gather(1, pos[..., None].expand(-1, -1, logits.size(-1))), -1)
    logp = logp_all.gather(2, roll.tokens[rows][..., None]).squeeze(2)
    return logp, entropy_of(logp_all).detach()


# %% --- rewards and group advantages (§1) ----------------------------------------------------
def rollout_and_score(model, problems, n, cfg, generator):
    """n completions per problem: rewards (len(problems), n), the Rollout, and the decoded texts."""
    prompts = [prompt_ids(p) for p in problems for _ in range(n)]
    roll = sample(model, prompts, max_new_tokens(cfg), cfg.temperature, generator)
    texts = [completion_text(row) for row in roll.tokens.tolist()]
    rewards = [score(problems[i // n], t) for i, t in enumerate(texts)]
    return torch.tensor(rewards, device=roll.mask.device).view(len(problems), n), roll, texts


def group_advantages(rewards: torch.Tensor, use_std: bool = True) -> torch.Tensor:
    """rewards (P, G) -> advantages (P, G): reward minus its group mean, divided by the group std
    (sample std, as verl) unless use_std is False (Dr. GRPO). Equal rewards give zeros."""
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not use_std:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + 1e-6)


# %% --- the losses, side by side (§3-§5) --------------------------------------------------------
# Each loss is L = -(1/N) sum_t A_t * (a term whose gradient is w_t grad logp_t), N = valid tokens.
# Methods differ only in the weight w_t(r_t, sign A_t):
#   method   A > 0                                       A < 0
#   grpo     r (r <= 1+eps_high), else 0                  r (1-eps_low <= r <= c), else 0
#   aspo     1/r (1/c <= r <= 1+eps_high), c (r < 1/c)    r (1-eps_low <= r <= c), c (r > c)
#   nois     1 where grpo's weight is r, else 0           (the paper's "no IS" ablation, §9)
#   posmean  the completion's mean r (r <= 1+eps_high)    as grpo (the paper's ladder, §9)
#   aspo-hardneg   A > 0 as aspo; A < 0 as grpo: the flip without the soft negative clip (§5)
# The flip split in its two halves (§13), A < 0 as aspo: which half keeps a stale right token?
#   aspo-fall  A > 0 as aspo where r < 1 (feeds what fell), as grpo where r >= 1
#   aspo-rise  A > 0 as grpo where r < 1, as aspo where r >= 1 (brakes what rose)
# The peers (peers.py: CISPO twice, IcePop, M2PO) are what asynchronous trainers ship (§13).
# The shipped loss taken apart (§5), one change per rung, with a per-token eps (entropy_split_eps):
#   grpo-ent          as grpo with the per-token eps
#   grpo-ent-softneg  A > 0 as grpo-ent; A < 0 as aspo (weight c above c) with the per-token eps
#   aspo-ref          as aspo with the per-token eps: the reference's ASPO loss (+ kl_k3 for all)
FLAT_CLIP_METHODS = ("grpo", "aspo", "nois", "posmean", "aspo-hardneg")  # one eps for every token
ENTROPY_METHODS = ("grpo-ent", "grpo-ent-softneg", "aspo-ref")  # these need the per-token entropy
SPLIT_METHODS = ("aspo-fall", "aspo-rise")
METHODS = FLAT_CLIP_METHODS + ENTROPY_METHODS + SPLIT_METHODS + tuple(peers.LOSSES)
FLIP = ("aspo", "aspo-hardneg", "aspo-ref") + SPLIT_METHODS  # positive tokens weighted 1/r (§5)
SOFT_NEG = ("aspo", "grpo-ent-softneg", "aspo-ref") + SPLIT_METHODS  # A < 0 above c: c, not 0
USER_LOSSES = {}  # "FILE.py:FUNCTION" -> a user's verl-style loss (integrations/user_loss.py)


def entropy_split_eps(entropy, mask, low: float, high: float, q: float = 0.8, wide: float = 0.4):
    """The shipped loss's per-token clip (§5, from Archer): a token whose entropy is at most the q
    quantile of its row's valid tokens keeps (low, high); the most uncertain fifth get `wide` on
    both sides. Returns (eps_low_t, eps_high_t), both (B, T). A row without valid tokens has a NaN
    quantile, so its tokens get `wide`: finite, and masked anyway."""
    quantile = torch.nanquantile(entropy.masked_fill(mask <= 0, float("nan")), q, -1, keepdim=True)
    narrow = entropy <= quantile  # (B, T); False against NaN
    return (torch.where(narrow, low, wide).to(entropy.dtype),
            torch.where(narrow, high, wide).to(entropy.dtype))


def policy_loss(method: str, logp, old_logp, advantages, mask, eps_low: float = 0.2,
                eps_high: float = 0.28, clip_c: float = 3.0, entropy=None, behaviour_weights=None,
                **peer_options):
    """logp, old_logp, mask: (B, T); advantages: (B,). Returns (token-mean loss, metrics dict).
    entropy (B, T): the current policy's per-token entropy, detached; ENTROPY_METHODS clip with it.
    behaviour_weights (B, T): the decoupled anchor's detached, truncated pi_prox / pi_behaviour
    (§12), multiplying every token's loss (verl's rollout_is_weights); None: no such weight.
    peer_options: the keywords of the peers' losses (peers.options), which only they read.
    With a leading member dimension (S, B, T) and (S, B) (batched.py) each member gets its own
    token mean: the loss is then (S,), and each metric a list over members."""
    if method in ENTROPY_METHODS:
        if entropy is None:
            raise ValueError(f"{method} needs the per-token entropy (entropy=...)")
        eps_low, eps_high = entropy_split_eps(entropy.detach(), mask, eps_low, eps_high)
    A = advantages[..., None].expand_as(logp)  # (B, T): every token shares its completion's A
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()  # r_t of §2, clamped as the reference does
    w_b = torch.ones_like(logp) if behaviour_weights is None else behaviour_weights.detach()
    metrics = ratio_metrics(ratio.detach(), A, mask, eps_low, eps_high, clip_c, w_b)
    if method in USER_LOSSES:  # a verl-style loss takes one policy's (B, T): once per member
        fn, w, clip = USER_LOSSES[method], behaviour_weights, (eps_low, eps_high, clip_c)
        loss = (fn(logp, old_logp, advantages, mask, *clip, w) if logp.dim() == 2 else
                torch.stack([fn(*args, *clip, w if w is None else w[s]) for s, args in
                             enumerate(zip(logp, old_logp, advantages, mask))]))
        return loss, metrics | measured_weights(loss, logp, ratio, A, mask)
    pos, neg = A > 0, A < 0
    # PPO-clip with clip-higher (§4): min(r A, clip(r) A), written as a max over losses
    ppo = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    # §4 dual-clip: for A < 0 the loss is capped at -c A, so r > c gets no gradient
    grpo = torch.where(neg, torch.minimum(ppo, -A * clip_c), ppo)
    unit = (logp - logp.detach()).exp()  # value 1, gradient grad logp: "weight 1" for a term
    if method in ("grpo", "grpo-ent") + FLIP + SOFT_NEG:  # PPO-clip, flipped or not, soft or hard
        positive = grpo
        if method in FLIP:
            # §5 positive tokens: p = min(r, 1+eps_high); -A (p/sg p)/sg p has value -A/p and
            # gradient weight 1/r (0 where p is the constant 1+eps_high); where 1/r > c, the soft
            # dual-clip -A c logp gives weight exactly c instead
            p = ratio.clamp(max=1 + eps_high)
            positive = torch.where(ratio < 1 / clip_c, -A * clip_c * logp,
                                   -A * (p / p.detach()) / p.detach())
            if method in SPLIT_METHODS:  # §13: one half flipped, the other half grpo's r
                fell = ratio < 1 if method == "aspo-fall" else ratio >= 1
                positive = torch.where(fell, positive, grpo)
        # §5 negative tokens: PPO-clip, and above c the soft dual-clip (weight c) or grpo's hard one
        soft = torch.where(ratio > clip_c, -A * clip_c * logp, ppo)
        negative = soft if method in SOFT_NEG else grpo
        per_token = torch.where(pos, positive, negative)
    elif method == "nois":  # no importance weight: w = 1 where grpo's is r, 0 where grpo clips
        keep = torch.where(pos, ratio <= 1 + eps_high, (ratio >= 1 - eps_low) & (ratio <= clip_c))
        per_token = -A * unit * keep
    elif method == "posmean":  # §9: positive tokens get their completion's mean r (no gradient)
        rbar = ((ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1))
        per_token = torch.where(pos, -A * rbar.detach() * unit * (ratio <= 1 + eps_high), grpo)
    elif method in peers.LOSSES:
        per_token = peers.LOSSES[method](logp, ratio, A, mask, grpo, eps_low, eps_high,
                                         **peer_options)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} "
                         "or FILE.py:FUNCTION")
    if behaviour_weights is not None:  # the decoupled anchor: w_b x the method's loss (§12)
        per_token = w_b * per_token
    loss = token_mean(per_token, mask)
    return loss, metrics | measured_weights(loss, logp, ratio, A, mask)


def measured_weights(loss, logp, ratio, A, mask) -> dict:
    """In training (logp requires grad): the weight w_t = -(dL/dlogp_t) N / A_t that the loss gave
    each token (§3, as token_weights measures it), averaged over the stale right tokens (§13)."""
    if not loss.requires_grad:
        return {}
    (grad,) = torch.autograd.grad(loss.sum(), logp, retain_graph=True, allow_unused=True)
    w = torch.zeros_like(logp) if grad is None else gradient_weights(grad, A, mask)
    return stale_weights({"own": w}, ratio.detach(), A, mask)


def gradient_weights(grad, A, mask):
    """The weight view of §3 from a token-mean loss's gradient: w_t = -(dL/dlogp_t) N / A_t over
    (B, T), N each member's own with (S, B, T); 0 where A = 0."""
    n = mask.sum((-2, -1), keepdim=True).clamp(min=1)
    return torch.where(A != 0, -grad * n / torch.where(A != 0, A, 1), 0.0)


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The token-mean of §3 over the valid tokens of (B, T), or of each member of (S, B, T)."""
    return (x * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp(min=1)


def kl_k3(logp, ref_logp, mask) -> torch.Tensor:
    """The shipped loss's KL to the start policy (§5), Schulman's k3 per token as verl computes it:
    exp(ref - logp) - (ref - logp) - 1, the log-ratio clamped to [-20, 20], each term to [-10, 10],
    token-mean. The caller adds kl_coef times it to the policy loss."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return token_mean((d.exp() - d - 1).clamp(-10.0, 10.0), mask)


def token_weights(method: str, logp, old_logp, advantages, mask, entropy=None, **kw):
    """The weight view of §3, measured: w_t = -(dL/dlogp_t) N / A_t by autograd through policy_loss
    for every token of (B, T) (0 where A = 0 or masked). Any loss of the form above, built-in or a
    user's, is read by these weights: the figures, check_loss and the tests all use it."""
    logp = logp.detach().clone().requires_grad_(True)
    loss, _ = policy_loss(method, logp, old_logp, advantages, mask, entropy=entropy, **kw)
    (grad,) = torch.autograd.grad(loss, logp, allow_unused=True)
    if grad is None:
        raise ValueError("its loss has no gradient with respect to log_prob")
    return gradient_weights(grad, advantages[:, None].expand_as(logp), mask)


# %% --- stale rollouts: asynchronous trainers, and which log-probs anchor the ratio (§12) ---
# Asynchronous RL overlaps sampling and training: the batch of step t comes from weights L steps
# old (AReaL bounds L at 4-8). Three log-probs are at hand for a token: pi_behaviour (the stale
# weights that sampled it), pi_prox (the weights at the start of this step) and pi_theta (now).
# - sampler anchor: r = pi_theta / pi_behaviour. A right token whose probability fell since it was
#   sampled has r < 1, already on the first update: grpo weights it r (down to 0, starving it),
#   aspo min(1/r, c) (up to c = 3, feeding it). E.g. r = 0.5: grpo 0.5, aspo 2.
# - decoupled anchor (AReaL's decoupled PPO): the method sees u = pi_theta / pi_prox, each token's
#   loss scaled by w_b = sg(min(pi_prox / pi_behaviour, cap)), the same for every method: the flip
#   acts only on the drift within this step. Truncated at the cap as verl's token-level rollout
#   correction does; AReaL's original loss drops (masks) the tokens above it instead (§12).
# - old log-probs recomputed with one update per step: u = 1, so aspo = grpo at any lag.
# Measured (the dose ladder, §13, README Results): at lag 8 under the sampler anchor the fall half
# carries it. aspo-fall keeps the careful way (+0.17 over grpo, 16/16 seeds), aspo-rise does not,
# and a flat weight of 1 (nois) is grpo within noise: it takes 1/r on the tokens that fell. The
# map: from lag 1 on under the sampler anchor at mu 32; within noise decoupled, or at mu 8.
def anchor(prox_logp, behaviour_logp, cfg):
    """The ratio's anchor (§12): (old log-probs the method's ratio is taken against, and the
    decoupled anchor's truncated behaviour weight w_b or None)."""
    if cfg.ratio_anchor == "sampler":
        return behaviour_logp, None
    return prox_logp, (prox_logp - behaviour_logp).exp().clamp(max=cfg.behaviour_cap)


@torch.no_grad()
def staleness(prox_logp, behaviour_logp, mask) -> dict:
    """How stale a batch is, per member and the same under both anchors: drift = E[(log pi_prox/
    pi_behaviour)^2] over valid tokens (0 on-policy; M2PO's stability budget is 0.04), and the
    effective sample size (sum w)^2 / (n sum w^2) of the untruncated behaviour weights w."""
    log_w, n = prox_logp - behaviour_logp, mask.sum((-2, -1))  # (S, B, T), (S,)
    w = log_w.exp() * mask
    return {"drift": token_mean(log_w ** 2, mask).tolist(),
            "ess": (w.sum((-2, -1)) ** 2 / (n * (w ** 2).sum((-2, -1)))).tolist()}


# %% --- the RL step ------------------------------------------------------------------------
def rl_step(model, optimizer, prompts: list, cfg, methods: list[str], gens: list, reference=None,
            behaviour=None, lags=None):
    """One rollout batch and mu = minibatches x epochs optimizer steps on it. Returns (metrics per
    member, timings). Why mu > 1 matters: at lag 0 the first minibatch is on-policy (r = 1, every
    method gives the same gradient, §2; under the decoupled anchor u = 1 at any lag); from the
    second update on pi_theta moves, and the methods' weights w(r) differ (§3-§5). Under the
    sampler anchor at lag > 0 they differ from the first: r = pi_theta / pi_behaviour != 1 (§12).

    `model` holds S policies (batched.py; S = 1 is one plain policy), member s with its own problems
    prompts[s], method methods[s] and sampling stream gens[s]. Rows are member-major: (S*B, ...) is
    viewed as (S, B, ...), and the loss is the sum of the members' own token means, so each member's
    gradient is its own; one whose loss turns non-finite gets "error" and no more updates.
    `reference`: the start policy (as many members), for --kl-coef.
    `behaviour`: the members' stale weights that sample the batch (§12), lags[s] steps old (lags
    None: all stale); None: `model` samples. A lag-0 member is on-policy: no behaviour weight."""
    S, t0 = len(methods), time.time()
    model.eval()
    sampler = model if behaviour is None else behaviour.eval()
    rewards, roll, texts = rollout_and_score(sampler, [p for ps in prompts for p in ps], cfg.group,
                                             cfg, gens)
    adv = group_advantages(rewards, cfg.adv_std).view(S, -1)  # (S, B): each member's own groups
    B, device = adv.size(1), adv.device
    every = torch.arange(S * B, device=device)
    with torch.no_grad():
        # log-probs through the training path, in fp32 at the sampling temperature. The sampler's
        # own agree to ~1e-5 (cached and uncached kernels sum in another order); recomputing makes
        # the first minibatch's ratio to pi_prox (these weights, now) 1 up to rounding, as in verl.
        prox_logp = token_logps(model, roll, every, cfg.temperature)[0].view(S, B, -1)  # (S, B, T)
        behaviour_logp = prox_logp if behaviour is None else token_logps(
            behaviour, roll, every, cfg.temperature)[0].view(S, B, -1)
        # the start policy's log-probs, for the KL term of the shipped loss (§5), only when it is on
        ref_logp = (token_logps(reference, roll, every, cfg.temperature)[0].view(S, B, -1)
                    if cfg.kl_coef else prox_logp)
    # on-policy: no behaviour weight at all, so that lag 0 is the on-policy run exactly
    old_logp, w_b = anchor(prox_logp, behaviour_logp, cfg) if behaviour else (prox_logp, None)
    t1, mask = time.time(), roll.mask.view(S, B, -1)
    stale = staleness(prox_logp, behaviour_logp, mask)
    weighted = [w_b is not None and (lags is None or lags[s] > 0) for s in range(S)]
    metrics = [group_stats(rewards.view(S, -1, cfg.group)[s], batched.member(roll, s, S),
                           texts[s * B:(s + 1) * B], cfg.group)
               | {key: v[s] for key, v in stale.items()} for s in range(S)]
    updates, failed = [[] for _ in range(S)], torch.zeros(S, dtype=torch.bool, device=device)
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.stack([torch.randperm(B, generator=g, device=g.device) for g in gens])
        for i, cols in enumerate(perm.to(device).tensor_split(cfg.minibatches, dim=1)):
            rows = (cols + torch.arange(S, device=device)[:, None] * B).flatten()  # member-major
            logp, entropy = (x.view(S, cols.size(1), -1)
                             for x in token_logps(model, roll, rows, cfg.temperature))
            prox, old, ref, msk, a = (batched.take(x, cols)
                                      for x in (prox_logp, old_logp, ref_logp, mask, adv))
            w = None if w_b is None else batched.take(w_b, cols)
            if epoch == 0 and i == 0:
                # no update has happened yet, so pi_theta == pi_prox: u is 1 (r too, on-policy, §2)
                drift = ((logp - prox).abs() * msk).max().item()
                assert drift < 1e-5, f"first minibatch is not on-policy: max |log u| = {drift:.2e}"
            losses, member_metrics = torch.zeros(S, device=device), [{} for _ in range(S)]
            for key in dict.fromkeys(zip(methods, weighted)):  # a call per method, and w_b or not
                idx, method = [s for s in range(S) if (methods[s], weighted[s]) == key], key[0]
                try:
                    loss, m = policy_loss(method, logp[idx], old[idx], a[idx], msk[idx],
                                          cfg.eps_low, cfg.eps_high, cfg.clip_c,
                                          entropy=entropy[idx],
                                          behaviour_weights=w[idx] if key[1] else None,
                                          **peers.options(cfg))
                except ValueError as e:  # a user's loss that fails stops its own runs only
                    loss, m = torch.full((len(idx),), math.nan, device=device), {}
                    for s in idx:
                        metrics[s].setdefault("error", f"its loss failed: {e}")
                if cfg.kl_coef:  # the shipped loss's k3 KL to the start (§5), for every method
                    loss = loss + cfg.kl_coef * kl_k3(logp[idx], ref[idx], msk[idx])
                losses = losses.index_put((torch.tensor(idx, device=device),), loss)
                for j, s in enumerate(idx):
                    member_metrics[s] = {k: v[j] for k, v in m.items() if not math.isnan(v[j])}
            for s in (~torch.isfinite(losses) & ~failed).nonzero().flatten().tolist():
                metrics[s].setdefault("error", f"non-finite loss ({losses[s].item()}) at "
                                               f"minibatch {i} of epoch {epoch}")
            failed |= ~torch.isfinite(losses)
            optimizer.zero_grad(set_to_none=True)
            losses.where(~failed, 0.0).sum().backward()
            batched.zero_failed_grads(model, failed)
            grad_norms = model.clip_grad_norm_(cfg.grad_clip).tolist()
            optimizer.step()
            for s in range(S):
                updates[s].append(member_metrics[s] | {"grad_norm": grad_norms[s]})
    for m, ups in zip(metrics, updates):
        keys = dict.fromkeys(key for u in ups for key in u)
        m.update({key: mean([u[key] for u in ups if key in u]) for key in keys})  # over mu updates
        m.update({f"last_{key}": ups[-1][key] for key in ("abs_log_ratio", "below1_pos",
                                                          "clip_dual_pos") if key in ups[-1]})
    return metrics, {"rollout_s": t1 - t0, "update_s": time.time() - t1}


def group_stats(rewards: torch.Tensor, roll: Rollout, texts: list[str], n: int) -> dict:
    """What any batch of groups shows (§7): reward, entropy, dead groups (all rewards equal: A = 0),
    distinct completions per group, and the share of completions that chose the careful strategy."""
    groups = [texts[i:i + n] for i in range(0, len(texts), n)]
    return {"reward": rewards.mean().item(),
            "entropy": ((roll.entropy * roll.mask).sum() / roll.mask.sum()).item(),
            "dead_groups": (rewards.std(dim=1) == 0).float().mean().item(),
            "distinct": sum(len(set(g)) for g in groups) / len(groups),
            "careful": sum(t.startswith(CAREFUL) for t in texts) / len(texts)}


def mean(xs):  # of a list; None for an empty one (JSON has no NaN)
    return sum(xs) / len(xs) if xs else None


# %% --- config and the start policy ----------------------------------------------------------
# Config (config.py) is one dataclass, each field a flag; the defaults are the demo. Every run
# starts from one pretrained policy (pretrain.py): a supervised stage on an imperfect teacher that
# answers the careful way 10% of the time, so the careful strategy is rare at the start (§10).
def parse_config(argv=None) -> Config:
    """Config from the command line (--help lists every flag); ValueError names a bad one."""
    return parse_flags(argv, METHODS, __doc__.split("\n")[0])


# %% --- held-out evaluation: pass@1, pass@k, entropy and the careful share on hard problems -------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def evaluate(model, problems, cfg: Config, seeds: list[int], show: int = 0) -> list[dict]:
    """Held-out metrics of every member of `model` (a GPT is one member), member s sampling with the
    fixed seed seeds[s], so two methods are compared on equal draws: pass@1 and pass@k (unbiased,
    with bootstrap standard errors over problems), distinct correct answers among the first k
    samples (§7), the same on hard problems (a carry: only the careful way is right) and the
    careful share there. Members go a chunk at a time (batched.chunks: bounded memory)."""
    out = []
    for part, part_seeds in batched.chunks(model, seeds, len(problems) * cfg.eval_samples):
        gens = [torch.Generator(device=next(part.parameters()).device).manual_seed(s)
                for s in part_seeds]
        rewards, roll, texts = rollout_and_score(part, problems * len(gens), cfg.eval_samples,
                                                 cfg, gens)
        P, n = len(problems), cfg.eval_samples
        out += [policy_metrics(problems, rewards.view(len(gens), P, n)[s],
                               batched.member(roll, s, len(gens)),
                               texts[s * P * n:(s + 1) * P * n], cfg, seed, show)
                for s, seed in enumerate(part_seeds)]
    return out


def policy_metrics(problems, rewards, roll: Rollout, texts, cfg: Config, seed, show) -> dict:
    """evaluate's numbers for one member: rewards (P, n), its Rollout and texts (P * n)."""
    n, k = cfg.eval_samples, cfg.k
    m = {f"eval_{key}": v for key, v in group_stats(rewards, roll, texts, n).items()}
    outs = [texts[i * n:(i + 1) * n] for i in range(len(problems))]
    correct = rewards.sum(dim=1).long().tolist()
    per = {"pass@1": [pass_at_k(n, c, 1) for c in correct],
           f"pass@{k}": [pass_at_k(n, c, k) for c in correct],
           "distinct_correct": [len({t for t, x in zip(o[:k], rewards[i, :k].tolist()) if x})
                                for i, o in enumerate(outs)]}
    hard = [i for i, p in enumerate(problems) if not getattr(p, "easy", True)]
    if hard:
        per["careful_hard"] = [sum(t.startswith(CAREFUL) for t in outs[i]) / n for i in hard]
    for key, vals in per.items():
        m[f"eval_{key}"] = mean(vals)
        if hard and key != "careful_hard":
            m[f"eval_hard_{key}"] = mean([vals[i] for i in hard])
    for key in ("pass@1", f"pass@{k}"):
        m[f"eval_{key}_se"] = stats.bootstrap_se(per[key], seed)
    m["samples"] = [(problems[i], outs[i][:8]) for i in range(show)]
    return m


def summary_numbers(m: dict, k: int, n_problems: int) -> dict:
    """An evaluation as summary.json keeps it: no eval_ prefix, pass@k named so whatever k is."""
    return {"k": k, "n_problems": n_problems} | {key[5:].replace(f"pass@{k}", "pass@k"): v
                                                 for key, v in m.items() if key.startswith("eval_")}


# %% --- the loop: every (method, lag, seed) run from the same start, side by side ----------
def sampling_seed(seed: int, step: int) -> int:
    """The rollout draws of a seed's step: the same for every method and lag (paired runs)."""
    return 1_000_003 * seed + step


def eval_seed(seed: int) -> int:
    """The held-out draws of a seed's evaluations: the same for every method, lag and step."""
    return seed * 7919 + 1


def show_samples(method, samples):
    """A few held-out prompts, each with the teacher's answer and 8 of the policy's completions."""
    for problem, outs in samples:
        marks = " ".join(f"{o or '∅'}{'✓' if score(problem, o) else '✗'}" for o in outs)
        print(f"      {method:7s} {problem.prompt}{problem.answer:<8s} -> {marks}")


def train_rl(start_state, cfg: Config, runs: list[dict], device, train_pool, test_set, log_file):
    """RL runs (dicts with method, lag, seed) from the start, trained side by side as one batched
    model (batched.py; one run is the plain case). Fills in their results; writes metrics lines."""
    S, methods, lags = len(runs), [r["method"] for r in runs], [r["lag"] for r in runs]
    model = batched.StackedGPT(model_config(cfg), [start_state] * S)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)  # per element
    reference = (batched.StackedGPT(model_config(cfg), [start_state] * S).eval()
                 if cfg.kl_coef else None)  # the start, for the KL term
    # stale rollouts (§12): the weights after each of the last max(lags) steps; member s samples
    # with those of lags[s] steps before the newest (the start until then)
    history = collections.deque([batched.snapshot(model)], maxlen=max(lags) + 1)
    behaviour = batched.StackedGPT(model_config(cfg), [start_state] * S) if max(lags) else None
    prompt_rngs = [random.Random(r["seed"]) for r in runs]  # a seed's prompts: the same for all
    gens = [torch.Generator(device=device) for _ in runs]
    timings = {"rollout_s": 0.0, "update_s": 0.0, "eval_s": 0.0, "members": S}
    for run in runs:
        run.update(timings=timings, stale={key: [] for key in stats.MECHANISM})
    for step in range(1, cfg.steps + 1):
        for gen, run in zip(gens, runs):
            gen.manual_seed(sampling_seed(run["seed"], step))
        prompts = [rng.sample(train_pool, cfg.prompts) for rng in prompt_rngs]
        if behaviour is not None:
            batched.load_stale(behaviour, history, lags)
        ms, t = rl_step(model, optimizer, prompts, cfg, methods, gens, reference, behaviour, lags)
        if behaviour is not None:
            history.append(batched.snapshot(model))
        for key, v in t.items():
            timings[key] += v
        for run, m in zip(runs, ms):
            for key, values in run["stale"].items():
                values += [m[key]] if m.get(key) is not None and m[key] == m[key] else []  # not nan
        for run, m in zip(runs, ms):
            if "error" in m and "error" not in run:  # only this run stops; the others go on
                run["error"] = (f"{stats.label(run)} seed {run['seed']}: {m['error']} at step "
                                f"{step}; metrics so far are in {log_file.name}")
                print(f"error: {run['error']}", file=sys.stderr)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            t0 = time.time()
            problems = test_set if step == cfg.steps else test_set[:cfg.curve_problems]
            evs = evaluate(model, problems, cfg, [eval_seed(r["seed"]) for r in runs],
                           0 if cfg.quiet else 3)
            timings["eval_s"] += time.time() - t0
            for run, m, ev in zip(runs, ms, evs):
                m.update(ev, eval_problems=len(problems))
                if step == cfg.steps and "error" not in run:
                    run["final"] = summary_numbers(ev, cfg.k, len(problems))
        for run, m in zip(runs, ms):
            if "error" in run or not (step % cfg.log_every == 0 or step == cfg.steps
                                      or "samples" in m):
                continue
            samples = m.pop("samples", [])
            print(stats.console_line(run, step, m, cfg.k))
            show_samples(stats.label(run), samples)
            log_file.write(json.dumps(stats.row(run, step) | m) + "\n")
        log_file.flush()
        if all("error" in run for run in runs):
            break
    for run in runs:  # the staleness and the stale positive tokens' weights, mean over steps
        run["stale"] = {key: mean(values) for key, values in run["stale"].items()}


# %% --- main: every method from the same start on the same seeds (paired, §10) ----------
def fail(message, status: int = 2) -> int:  # one line on stderr, and the exit status
    print(f"nano_aspo.py: error: {message}", file=sys.stderr)
    return status


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        device = pick_device(cfg.device)
    except ValueError as e:
        return fail(e)
    problems = {}
    for split, name in (("train", "train-problems"), ("test", "eval-problems")):
        try:
            problems[split] = task_problems(cfg, split)
        except ValueError as e:  # a problem space too small for the requested count
            return fail(f"--{name} too large for this task: {e}")
    for spec in (m for m in cfg.method_list if ".py:" in m):  # a user's loss: loaded and tried now
        from integrations.user_loss import register_user_loss  # the core's one lazy import
        try:  # a stale lag under the decoupled anchor will hand it behaviour weights (§12)
            register_user_loss(spec, USER_LOSSES, cfg.ratio_anchor == "decoupled"
                               and max(cfg.lag_list) > 0)
        except ValueError as e:
            return fail(f"--methods {e}")
    t_start, out = time.time(), Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        model, ckpt, pretrain_s = load_start(cfg, device)
    except OSError as e:
        return fail(f"--out-dir {cfg.out_dir}: {e.strerror}")
    except RuntimeError as e:  # a corrupt or foreign checkpoint
        return fail(e, status=1)
    print(f"device {device}, model {model.num_params():,} parameters, mu = {cfg.mu} updates "
          "per rollout batch")
    t0 = time.time()
    # the start: every run of every seed begins here, so its held-out numbers are measured once
    train_pool, test_set = problems["train"], problems["test"]
    (initial,) = evaluate(model, test_set, cfg, [1], show=0 if cfg.quiet else 3)
    init_s, start = time.time() - t0, summary_numbers(initial, cfg.k, len(test_set))
    print(stats.start_line(start, cfg.k))
    show_samples("init", initial.pop("samples"))
    # every (method, lag, seed) is one run; a seed's runs share prompts and draws (paired, §10)
    runs = [{"method": m, "lag": lag, "anchor": cfg.ratio_anchor, "seed": seed, "initial": start,
             "final": None}
            for lag in cfg.lag_list
            for seed in (cfg.seed_list if cfg.steps else []) for m in cfg.method_list]
    size = max(1, min(cfg.max_members, len(runs))) if cfg.batch_seeds else 1  # per batch
    try:
        if runs:
            batched.check_fit(model_config(cfg), size, cfg.prompts * cfg.group, block_size(cfg),
                              device, snapshots=min(max(cfg.lag_list), cfg.steps) + 1)
    except ValueError as e:
        return fail(e)
    status = 0
    with open(out / "metrics.jsonl", "w") as log_file:
        try:
            for run in runs:
                log_file.write(json.dumps(stats.row(run, 0) | initial
                                          | {"eval_problems": len(test_set)}) + "\n")
            for first in range(0, len(runs), size):
                train_rl(model.state_dict(), cfg, runs[first:first + size], device, train_pool,
                         test_set, log_file)
                for run in runs[first:first + size]:
                    run["timings"]["initial_eval_s"] = init_s
            status = int(any("error" in run for run in runs))
        except KeyboardInterrupt:
            print(f"\ninterrupted: metrics so far are in {out / 'metrics.jsonl'}", file=sys.stderr)
            status = 130
    summary = {"config": dataclasses.asdict(cfg), "wall_time_s": time.time() - t_start,
               "pretrain_s": pretrain_s, "checkpoint": str(ckpt), "start": start, "runs": runs}
    summary |= stats.compare(runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + "\n".join(stats.summary_lines(start, runs, summary, cfg.k)))
    print(f"wall time {time.time() - t_start:.1f}s; wrote {out / 'metrics.jsonl'} and "
          f"{out / 'summary.json'}")
    return status


if __name__ == "__main__":
    if "ipykernel" in sys.modules:  # stepping through the # %% cells in Jupyter or VS Code
        main([])
    else:
        sys.exit(main())

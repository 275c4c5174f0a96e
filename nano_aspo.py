"""nano-aspo: GRPO and ASPO side by side on a tiny GPT that learns to add.

The tutorial of one RL run, top to bottom: config, tokenizer, sampling, advantages, the losses (the
heart: every method is a per-token weight on the same gradient), pretraining the start policy,
held-out evaluation, the RL step and loop, and a short main that runs every method from the same
checkpoint on the same seeds. The math is ASPO.md (beside this file); "§n" cites its sections. ASPO
is Wang et al., "Asymmetric Importance Sampling Policy Optimization", arXiv 2510.06062.

Deliberate simplifications, so that the algorithm is all there is to read:
- the task (rewards.py) is addition with two ways to answer, and the reward is exact 0/1;
- the policy is a 100k-parameter GPT (model.py) pretrained here in a minute on an imperfect teacher;
- sampler and trainer are one model in one process: the old log-probs are recomputed by the training
  path, so the first update of every batch is exactly on-policy (r = 1);
- no entropy bonus, no value model, and by default no KL term (--kl-coef adds the shipped loss's, §5);
  advantages are group-relative (§1).

    python nano_aspo.py                  # pretrain once, then GRPO and ASPO from the same checkpoint
    python nano_aspo.py --seeds 0,1,2    # three paired seeds
    python nano_aspo.py --help
"""
# %%
import argparse
import dataclasses
import hashlib
import inspect
import json
import math
import operator
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F

from experiments.stats import (bootstrap_se, locked_in, lockin_share, paired_comparison, paired_lockin, start_line,
                               summary_lines)
from batched import StackedGPT, member_bytes, multinomial_per_member
from model import GPT, GPTConfig, KVCache, load_checkpoint, save_checkpoint
from rewards import (CAREFUL, SHORTCUT, CarryProblem, Problem, corrupt, corruption_digits, make_problems, random_problem,
                     score, split_of)

# the shipped loss taken apart (§5), one change per rung: grpo -> grpo-ent (entropy-split clip) ->
# grpo-ent-softneg (soft negative dual-clip) -> aspo-ref (the flip); these three need the per-token entropy
ENTROPY_METHODS = ("grpo-ent", "grpo-ent-softneg", "aspo-ref")
FLAT_CLIP_METHODS = ("grpo", "aspo", "nois", "posmean", "aspo-hardneg")  # one eps for every token
METHODS = FLAT_CLIP_METHODS + ENTROPY_METHODS


# %% --- config: one dataclass, filled by argparse; the defaults are the demo ---------------------
def flag(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    methods: str = flag("grpo,aspo", f"comma-separated methods to train, from {','.join(METHODS)}, or FILE.py:FUNCTION: "
                                     "your own verl-style policy loss (integrations/user_loss.py)")
    seeds: str = flag("0", "comma-separated RL seeds; each runs every method from the same checkpoint (paired)")
    out_dir: str = flag("out", "directory for metrics.jsonl, summary.json and (unless --ckpt-dir) the cached checkpoint")
    ckpt_dir: str = flag("", "directory of the cached pretrained checkpoint, shared by runs (default: --out-dir)")
    device: str = flag("auto", "auto, cpu, cuda, cuda:N or mps")
    quiet: bool = flag(False, "do not print sample completions at each evaluation")
    # task (rewards.py): add numbers, answering with a strategy marker and the sum's digits least significant
    # first (c: with carries, right everywhere; n: no carries, right only on easy problems)
    digits: int = flag(3, "each operand is uniform in [0, 10**digits)")
    operands: int = flag(2, "numbers per problem")
    train_problems: int = flag(800, "size of the RL prompt pool (pretraining draws fresh problems every step)")
    easy_share: float = flag(0.95, "share of the RL prompt pool without any carry (easy problems, where the "
                                   "shortcut is right; about 17 percent of all 3-digit sums)")
    eval_easy_share: float = flag(0.5, "share of the held-out set without any carry (half easy, half hard: "
                                       "the metrics weigh both kinds equally)")
    # model (model.py)
    n_layer: int = flag(2, "transformer blocks")
    n_head: int = flag(4, "attention heads")
    n_embd: int = flag(64, "embedding width")
    # pretraining: the supervised stage that makes the starting policy
    teacher_noise: float = flag(0.05, "share of the teacher's shortcut (n) answers it corrupts (one digit changed)")
    careful_share: float = flag(0.1, "share of the teacher's answers that use the careful strategy (c)")
    careful_noise: float = flag(0.2, "share of the teacher's careful answers it corrupts (the careful way is "
                                     "right on every problem but less reliable)")
    careful_share_start: float = flag(0.5, "careful share of the teacher's answers at the first pretraining step; "
                                           "it falls linearly to --careful-share over --careful-anneal of the steps "
                                           "(more examples of the rare skill early, the start's share at the end)")
    careful_anneal: float = flag(0.0, "fraction of the pretraining steps over which the careful share falls "
                                      "from --careful-share-start to --careful-share; 0 (the default: the schedule "
                                      "did not meet its criterion, experiments/README.md phase 5) keeps --careful-share")
    pretrain_easy_share: float = flag(-1.0, "share of pretraining problems without a carry; -1 draws the natural "
                                            "mix (about 17 percent of 3-digit sums)")
    pretrain_steps: int = flag(4000, "supervised steps")
    pretrain_batch: int = flag(64, "sequences per supervised step")
    pretrain_lr: float = flag(4e-3, "peak learning rate of the supervised stage "
                                    "(OneCycleLR: warm-up over 5 percent of the steps, cosine decay)")
    pretrain_seed: int = flag(1234, "seed of the pretraining stage (one checkpoint shared by all RL seeds)")
    # RL
    steps: int = flag(100, "RL steps (one rollout batch each)")
    prompts: int = flag(32, "prompts per RL step (P)")
    group: int = flag(8, "completions per prompt (G)")
    temperature: float = flag(1.0, "sampling temperature (also used for old and new log-probs)")
    lr: float = flag(2e-4, "RL learning rate (AdamW)")
    minibatches: int = flag(8, "optimizer steps per epoch over one rollout batch")
    epochs: int = flag(4, "passes over one rollout batch; mu = minibatches * epochs updates per batch")
    adv_std: bool = flag(True, "divide advantages by the group std (§1); --no-adv-std gives Dr. GRPO")
    grad_clip: float = flag(1.0, "max global gradient norm")
    eps_low: float = flag(0.2, "lower clip range: ratios below 1 - eps_low are clipped (§4)")
    eps_high: float = flag(0.28, "upper clip range (clip-higher): ratios above 1 + eps_high are clipped (§4)")
    clip_c: float = flag(3.0, "dual-clip constant c (§4 hard, §5 soft)")
    kl_coef: float = flag(0.0, "beta of the k3 KL loss to the start policy, added to every method's loss (§5: the "
                               "shipped loss uses 0.001); 0, the default comparison, has no KL term")
    # evaluation
    eval_every: int = flag(20, "evaluate on held-out problems every this many RL steps")
    eval_problems: int = flag(500, "held-out problems of the start and final evaluations")
    curve_problems: int = flag(100, "held-out problems of the evaluations in between (the first of the full set; "
                                    "cheaper, for the curves)")
    eval_samples: int = flag(16, "samples per held-out problem (n of the pass@k estimator)")
    k: int = flag(8, "k of pass@k (k <= eval_samples)")
    log_every: int = flag(5, "write a metrics line every this many RL steps")
    # many runs at once (batched.py)
    batch_seeds: bool = flag(True, "train every (method, seed) of the run side by side as one batched model; "
                                   "--no-batch-seeds trains them one after another, each alone (the reference path)")
    max_members: int = flag(64, "most (method, seed) runs in one batched model; more go in chunks of this many")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in self.seeds.split(",") if s.strip()]

    @property
    def mu(self) -> int:
        return self.minibatches * self.epochs

    def validate(self):
        """Raise ValueError naming the flag of the first bad value."""
        def need(ok, flag, what):
            if not ok:
                raise ValueError(f"--{flag} {what}")
        bad = [m for m in self.method_list if m not in METHODS and ".py:" not in m]
        need(self.method_list and not bad, "methods",
             f"must name methods from {','.join(METHODS)} or FILE.py:FUNCTION (got {self.methods!r})")
        for spec in (m for m in self.method_list if ".py:" in m):
            from integrations.user_loss import user_loss
            try:  # loads a user's loss and calls it once, so that a broken one stops before pretraining
                user_loss(spec)
            except ValueError as e:
                need(False, "methods", f"{spec}: {e}")
        try:
            seeds = self.seed_list
        except ValueError:
            seeds = None
        need(seeds, "seeds", f"must be comma-separated integers (got {self.seeds!r})")
        device_ok = self.device in ("auto", "cpu", "mps", "cuda") or (self.device[:5] == "cuda:" and self.device[5:].isdigit())
        need(device_ok, "device", f"must be auto, cpu, cuda, cuda:N or mps (got {self.device!r})")
        need(self.steps >= 0, "steps", f"must be >= 0 (got {self.steps}; 0 evaluates the start only)")
        ranges = {"at least 1": (lambda v: v >= 1, "digits n_layer n_head n_embd pretrain_steps pretrain_batch "
                  "max_members curve_problems prompts minibatches epochs eval_every eval_problems eval_samples log_every train_problems"),
                  "at least 2": (lambda v: v >= 2, "operands group"),  # a group of one has no advantage
                  "> 0": (lambda v: v > 0, "temperature lr pretrain_lr grad_clip"), ">= 0": (lambda v: v >= 0, "kl_coef"),
                  "in [0, 1)": (lambda v: 0 <= v < 1, "teacher_noise careful_noise"),
                  "in [0, 1]": (lambda v: 0 <= v <= 1, "careful_share careful_share_start careful_anneal easy_share "
                                "eval_easy_share"),
                  "in (0, 1)": (lambda v: 0 < v < 1, "eps_low eps_high"), "> 1": (lambda v: v > 1, "clip_c")}
        for what, (ok, names) in ranges.items():
            for name in names.split():
                need(ok(getattr(self, name)), name.replace("_", "-"), f"must be {what} (got {getattr(self, name)})")
        need(self.pretrain_easy_share == -1 or 0 <= self.pretrain_easy_share <= 1, "pretrain-easy-share",
             f"must be in [0, 1], or -1 for the natural mix (got {self.pretrain_easy_share})")
        need(self.n_embd % self.n_head == 0, "n-embd", f"must be divisible by --n-head ({self.n_embd} % {self.n_head} != 0)")
        need(self.prompts <= self.train_problems, "prompts",
             f"must be <= --train-problems (got {self.prompts} > {self.train_problems})")
        need(self.curve_problems <= self.eval_problems, "curve-problems",
             f"must be <= --eval-problems (it is a subset of them; got {self.curve_problems} > {self.eval_problems})")
        need(2 <= self.k <= self.eval_samples, "k", f"must be in [2, --eval-samples]: pass@1 is always reported "
                                                     f"(got {self.k}, --eval-samples {self.eval_samples})")
        need(self.prompts * self.group >= self.minibatches, "minibatches",
             f"must be <= prompts * group = {self.prompts * self.group} (got {self.minibatches})")


def parse_config(argv=None) -> Config:
    """Config from the command line: every field is a flag (--out-dir or --out-dir=...), with its help."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(Config):
        name = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(name, type=type(f.default), default=f.default, help=f.metadata["help"])
    cfg = Config(**vars(parser.parse_args(argv)))
    cfg.validate()
    return cfg


def pick_device(name: str) -> torch.device:
    """--device as a torch.device; ValueError where that device is not on this machine."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return torch.device("cuda" if available["cuda"] else "mps" if available["mps"] else "cpu")
    if not available[name.split(":")[0]]:
        raise ValueError(f"--device {name}: {name.split(':')[0].upper()} is not available on this machine")
    return torch.device(name)


# %% --- tokenizer: a tiktoken Encoding built from an in-code vocabulary (nothing is downloaded) ---
VOCAB = "0123456789+-*= \ncn"  # one token per character: digits, operators, '=', space, newline, strategy markers
BOS, EOS, PAD = len(VOCAB), len(VOCAB) + 1, len(VOCAB) + 2
ENCODING = tiktoken.Encoding(
    name="nano-aspo",
    pat_str=r"[\s\S]",  # split into single characters, so no merges ever apply
    mergeable_ranks={ch.encode(): i for i, ch in enumerate(VOCAB)},
    special_tokens={"<|bos|>": BOS, "<|eos|>": EOS, "<|pad|>": PAD},
)
VOCAB_SIZE = ENCODING.n_vocab


def encode(text: str) -> list[int]:
    """Text -> token ids. tiktoken panics (a BaseException) on an unknown byte, so check first."""
    if not isinstance(text, str):
        raise ValueError(f"encode expects a str, got {type(text).__name__}")
    for i, ch in enumerate(text):
        if ch not in VOCAB:
            raise ValueError(f"character {ch!r} at position {i} is not in the vocabulary {VOCAB!r}")
    return ENCODING.encode_ordinary(text)


def decode(ids) -> str:
    """Token ids -> text; special tokens appear as <|bos|>, <|eos|>, <|pad|>."""
    try:
        ids = [operator.index(i) for i in ids]  # ints only: no floats, strings or None
    except TypeError as e:
        raise ValueError(f"token ids must be integers ({e})") from None
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{VOCAB_SIZE - 1})")
    return ENCODING.decode(ids)


def completion_text(ids) -> str:
    """What the verifier sees: the completion up to (not including) its first end token."""
    ids = [int(i) for i in ids]
    return decode(ids[:ids.index(EOS)] if EOS in ids else ids)


# %% --- sampling: G completions per prompt in one batch, with the KV cache ------------------------
@dataclass
class Rollout:
    prompt_lens: torch.Tensor  # (B,) prompt length of each row, BOS included
    sequences: torch.Tensor    # (B, L) prompt + completion, right-padded with PAD
    tokens: torch.Tensor       # (B, T) completion tokens, PAD after the end token
    mask: torch.Tensor         # (B, T) 1.0 for valid completion tokens, up to and including EOS
    logp: torch.Tensor         # (B, T) fp32 log-prob of each sampled token under the sampling policy
    entropy: torch.Tensor      # (B, T) fp32 entropy of the sampling distribution at each step

    def member(self, s: int, S: int) -> "Rollout":
        """Member s's rows of a batched model's rollout (its rows are the s-th of S equal member-major parts)."""
        return self if S == 1 else Rollout(*(getattr(self, f.name).chunk(S)[s] for f in dataclasses.fields(self)))


def draw(probs: torch.Tensor, generator) -> torch.Tensor:
    """One token per row of probs (b, V). A list of generators is one per member of a batched model
    (batched.py): each member's rows draw from its own stream, exactly as they would alone."""
    return multinomial_per_member(probs, generator if isinstance(generator, list) else [generator]).squeeze(1)


@torch.no_grad()
def sample(model: GPT, prompts: list[list[int]], max_new_tokens: int, temperature: float,
           generator, use_cache: bool = True) -> Rollout:
    """Sample one completion per prompt row (repeat a prompt G times for a group).

    Rows are bucketed by prompt length so that no prompt needs padding; each bucket is one batch
    that is prefilled once and then extended one token at a time through the KV cache.
    use_cache=False recomputes the whole sequence at every step instead (bench.py compares the two).
    """
    device = next(model.parameters()).device
    B = len(prompts)
    tokens = torch.full((B, max_new_tokens), PAD, dtype=torch.long, device=device)
    mask = torch.zeros(B, max_new_tokens, device=device)
    logps = torch.zeros(B, max_new_tokens, device=device)
    ents = torch.zeros(B, max_new_tokens, device=device)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    sequences = torch.full((B, int(lens.max()) + max_new_tokens), PAD, dtype=torch.long, device=device)
    for length in sorted(set(lens.tolist())):
        rows = (lens == length).nonzero().squeeze(1)
        prompt_idx = torch.tensor([prompts[i] for i in rows.tolist()], dtype=torch.long, device=device)
        idx = prompt_idx
        cache = KVCache(model.config, len(rows), device) if use_cache else None
        logits = model(idx, cache)[:, -1]
        alive = torch.ones(len(rows), dtype=torch.bool, device=device)
        for t in range(max_new_tokens):
            logp_all = F.log_softmax(logits.float() / temperature, dim=-1)  # (b, V)
            tok = draw(logp_all.exp(), generator)
            tokens[rows, t] = torch.where(alive, tok, PAD)
            mask[rows, t] = alive.float()
            logps[rows, t] = logp_all.gather(1, tok[:, None]).squeeze(1) * alive
            ents[rows, t] = -(logp_all.exp() * logp_all).sum(-1) * alive
            alive &= tok != EOS
            if not alive.any() or t == max_new_tokens - 1:
                break
            if use_cache:
                logits = model(tok[:, None], cache)[:, -1]
            else:
                idx = torch.cat([idx, tok[:, None]], dim=1)
                logits = model(idx)[:, -1]
        sequences[rows, :length + max_new_tokens] = torch.cat([prompt_idx, tokens[rows]], dim=1)
    return Rollout(lens, sequences, tokens, mask, logps, ents)


def token_logps(model: GPT, roll: Rollout, rows: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training path: log-probs (len(rows), T) of the completion tokens under the current model, by one
    plain forward pass (no cache) over prompt + completion, and the entropy (len(rows), T) of the
    distribution at each of those positions (the shipped loss's per-token clip reads it, §5)."""
    seq = roll.sequences[rows]
    logits = model(seq[:, :-1]).float() / temperature  # (b, L-1, V): position j predicts token j+1
    T = roll.tokens.size(1)
    pos = roll.prompt_lens[rows, None] - 1 + torch.arange(T, device=seq.device)  # (b, T), < L - 1 by construction
    logp_all = F.log_softmax(logits.gather(1, pos[..., None].expand(-1, -1, logits.size(-1))), dim=-1)  # (b, T, V)
    entropy = -(logp_all.exp() * logp_all).sum(-1).detach()
    return logp_all.gather(2, roll.tokens[rows][..., None]).squeeze(2), entropy


# %% --- advantages (§1) ----------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, use_std: bool = True) -> torch.Tensor:
    """rewards (P, G) -> advantages (P, G): reward minus its group mean, divided by the group std
    (sample std, as verl) unless use_std is False (Dr. GRPO). A group of equal rewards gets zeros."""
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    if not use_std:
        return centered
    return centered / (rewards.std(dim=1, keepdim=True) + 1e-6)


# %% --- the losses, side by side (§3-§5) -----------------------------------------------------------
# Each loss is L = -(1/N) sum_t A_t * (something whose gradient is w_t * grad logp_t), N = valid tokens.
# What differs between methods is only the weight w_t(r_t, sign A_t):
#   method  A > 0                                     A < 0
#   grpo    r (r <= 1+eps_high), else 0               r (1-eps_low <= r <= c), else 0
#   aspo    1/r (1/c <= r <= 1+eps_high), c (r < 1/c), 0 above   r (1-eps_low <= r <= c), c (r > c), 0 below
#   nois    1 where grpo's weight is r, else 0        (the ASPO paper's "no IS" ablation)
#   posmean rbar (mean r of the completion) where r <= 1+eps_high, else 0;  A < 0 as grpo   (paper's ladder, §9)
#   aspo-hardneg  A > 0 as aspo;  A < 0 as grpo (hard dual-clip): separates the flip from the soft negative clip (§5)
# The shipped loss taken apart (§5), one change per rung; per-token eps (entropy_split_eps): as passed, or 0.4 on
# both sides where the token's entropy is above its row's 0.8 quantile:
#   grpo-ent          as grpo with the per-token eps
#   grpo-ent-softneg  A > 0 as grpo-ent;  A < 0 as aspo (c above c) with the per-token eps
#   aspo-ref          as aspo with the per-token eps: the reference's ASPO loss (add kl_k3 for all of it)
FLIP = ("aspo", "aspo-hardneg", "aspo-ref")  # positive tokens weighted 1/r (§5)
SOFT_NEG = ("aspo", "grpo-ent-softneg", "aspo-ref")  # negative tokens above c weighted c, not 0 (§5)


def entropy_split_eps(entropy: torch.Tensor, mask: torch.Tensor, low: float, high: float, q: float = 0.8,
                      wide: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped loss's per-token clip (§5, from Archer): a token whose entropy is at most the q quantile
    of its row's valid tokens (linear interpolation, as torch.nanquantile) keeps (low, high); the others,
    the most uncertain fifth, get `wide` on both sides. Returns (eps_low_t, eps_high_t), both (B, T). A row
    without valid tokens has a NaN quantile, so its tokens get `wide`: finite, and masked anyway."""
    quantile = torch.nanquantile(entropy.masked_fill(mask <= 0, float("nan")), q, dim=-1, keepdim=True)
    narrow = entropy <= quantile  # (B, T); False against NaN
    return (torch.where(narrow, low, wide).to(entropy.dtype), torch.where(narrow, high, wide).to(entropy.dtype))


def policy_loss(method: str, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.28, clip_c: float = 3.0,
                entropy: torch.Tensor | None = None):
    """logp, old_logp, mask: (B, T); advantages: (B,). Returns (token-mean loss, metrics dict).
    entropy (B, T): the current policy's per-token entropy on the training path, detached; the methods
    of ENTROPY_METHODS clip with it (entropy_split_eps), the others ignore it.
    With a leading member dimension (S, B, T) and (S, B) (batched.py) each member gets its own token
    mean: the loss is then (S,), one per member, and each metric a list over members."""
    if method in ENTROPY_METHODS:
        if entropy is None:
            raise ValueError(f"{method} needs the per-token entropy (entropy=...)")
        eps_low, eps_high = entropy_split_eps(entropy.detach(), mask, eps_low, eps_high)
    A = advantages[..., None].expand_as(logp)  # (B, T): every token of a completion shares its advantage
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()  # r_t of §2, log-ratio clamped as the reference does
    pos, neg = A > 0, A < 0
    # PPO-clip with clip-higher (§4): min(r A, clip(r) A), written as a max over losses
    ppo = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    # §4 dual-clip: for A < 0 the loss is capped at -c A, so r > c gets no gradient
    grpo = torch.where(neg, torch.minimum(ppo, -A * clip_c), ppo)
    unit = (logp - logp.detach()).exp()  # value 1, gradient grad logp: "weight 1" for any term it multiplies
    if method in ("grpo", "grpo-ent") + FLIP + SOFT_NEG:  # PPO-clip on each side, flipped or not, soft or hard above c
        positive = grpo
        if method in FLIP:
            # §5 positive tokens: p = min(r, 1+eps_high); loss -A (p/sg p)/sg p has value -A/p and gradient
            # weight 1/r (zero where p is the constant 1+eps_high); where 1/r > c, the soft dual-clip
            # -A c logp gives weight exactly c instead
            p = ratio.clamp(max=1 + eps_high)
            positive = torch.where(ratio < 1 / clip_c, -A * clip_c * logp, -A * (p / p.detach()) / p.detach())
        # §5 negative tokens: PPO-clip, and above c either the soft dual-clip (weight c) or grpo's hard one (0)
        negative = torch.where(ratio > clip_c, -A * clip_c * logp, ppo) if method in SOFT_NEG else grpo
        per_token = torch.where(pos, positive, negative)
    elif method == "nois":
        # no importance weight: w = 1 wherever grpo's weight is r, 0 wherever grpo clips
        keep = torch.where(pos, ratio <= 1 + eps_high, (ratio >= 1 - eps_low) & (ratio <= clip_c))
        per_token = -A * unit * keep
    elif method == "posmean":
        # §9's ladder step: each positive completion's tokens get its mean ratio rbar (no gradient
        # through rbar) where grpo's token clip lets them through; negatives exactly as grpo
        rbar = ((ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)).detach()  # (B, 1)
        per_token = torch.where(pos, -A * rbar * unit * (ratio <= 1 + eps_high), grpo)
    elif ".py:" in method:  # a user's verl-style loss (--methods FILE.py:FUNCTION): integrations/user_loss.py
        from integrations.user_loss import user_loss
        fn = user_loss(method)  # a verl loss takes one policy's (B, T): called once per member
        loss = fn(logp, old_logp, advantages, mask, eps_low, eps_high, clip_c) if logp.dim() == 2 else torch.stack(
            [fn(*member, eps_low, eps_high, clip_c) for member in zip(logp, old_logp, advantages, mask)])
        return loss, ratio_metrics(ratio.detach(), A, mask, eps_low, eps_high, clip_c)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} or FILE.py:FUNCTION")
    return token_mean(per_token, mask), ratio_metrics(ratio.detach(), A, mask, eps_low, eps_high, clip_c)


def token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The token-mean aggregation of §3 over the valid tokens of (B, T), or of each member of (S, B, T);
    0 without valid tokens."""
    return (x * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp(min=1)


@torch.no_grad()
def ratio_metrics(ratio, A, mask, eps_low, eps_high, clip_c) -> dict:
    """Clip fractions (low, high, dual) and ratio statistics, split by the sign of the advantage (§7).
    'dual' is r > c for A < 0 (grpo's weight is 0 there, aspo's is c) and r < 1/c for A > 0 (grpo's
    weight is r < 1/c there, aspo's is c): the soft dual-clip of §5. 'below1' is r < 1, where the flip
    1/r and grpo's r differ in direction. eps_low, eps_high: floats, or (B, T) per-token eps (the
    entropy-split methods), so that a token counts as clipped where its own clip applied. Over the last
    two dimensions (B, T): a float each, or a list over members; a sign with no token in the batch is
    left out (nan for that member)."""
    dims, valid = (-2, -1), mask > 0
    m = {"abs_log_ratio": torch.where(valid, ratio.log().abs(), 0).sum(dims) / valid.sum(dims).clamp(min=1)}
    for name, sign in (("pos", A > 0), ("neg", A < 0)):
        tokens = valid & sign
        n = tokens.sum(dims)
        if not n.any():
            continue
        share = lambda hit: (hit & tokens).sum(dims) / n  # 0/0 = nan for a member without such tokens
        m.update({f"clip_low_{name}": share(ratio < 1 - eps_low), f"clip_high_{name}": share(ratio > 1 + eps_high),
                  f"clip_dual_{name}": share(ratio < 1 / clip_c if name == "pos" else ratio > clip_c),
                  f"below1_{name}": share(ratio < 1),
                  f"ratio_min_{name}": torch.where(tokens, ratio, math.inf).amin(dims).where(n > 0, math.nan),
                  f"ratio_mean_{name}": torch.where(tokens, ratio, 0).sum(dims) / n,
                  f"ratio_max_{name}": torch.where(tokens, ratio, -math.inf).amax(dims).where(n > 0, math.nan)})
    return {key: v.tolist() for key, v in m.items()}


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The shipped loss's KL to the reference policy (§5), Schulman's k3 estimator per token,
    exp(ref - logp) - (ref - logp) - 1 (>= 0; unbiased for KL(pi_theta || pi_ref) on pi_theta's own samples),
    as verl computes it: the log-ratio clamped to [-20, 20], each term to [-10, 10]; aggregated like the
    policy loss (token-mean over the mask). Its gradient is (1 - pi_ref / pi_theta) / N per token: it pulls
    logp toward ref_logp. The caller adds kl_coef times it to the policy loss; 0 without valid tokens."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    kl = (d.exp() - d - 1).clamp(-10.0, 10.0)
    return token_mean(kl, mask)


def token_weights(method: str, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, entropy: torch.Tensor | None = None, **clip) -> torch.Tensor:
    """The weight view of §3, measured: w_t = -(dL/dlogp_t) N / A_t by autograd through policy_loss, for
    every token of the batch (B, T) (0 where A = 0 or the token is masked). Any loss of the form above,
    built-in or a user's, is read by these weights; the figures, check_loss and the tests all use it.
    entropy (B, T) is passed on to policy_loss (the methods of ENTROPY_METHODS need it); clip: its eps, c."""
    logp = logp.detach().clone().requires_grad_(True)
    loss, _ = policy_loss(method, logp, old_logp, advantages, mask, entropy=entropy, **clip)
    (grad,) = torch.autograd.grad(loss, logp, allow_unused=True)
    if grad is None:
        raise ValueError("its loss has no gradient with respect to log_prob")
    A = advantages[:, None].expand_as(logp)
    return torch.where(A != 0, -grad * mask.sum() / torch.where(A != 0, A, 1), 0.0)


# %% --- pretraining: the supervised stage that makes a stochastic, partly-right start policy -------
def task_problems(cfg: Config, split: str) -> list[CarryProblem]:
    """The RL prompt pool (split "train") or the fixed held-out evaluation set ("test"); pretraining
    draws its own fresh problems (teacher_batch)."""
    kw = dict(digits=cfg.digits, operands=cfg.operands)
    if split == "train":
        return make_problems(cfg.train_problems, cfg.pretrain_seed, "train", easy_share=cfg.easy_share, **kw)
    return make_problems(cfg.eval_problems, 0, "test", easy_share=cfg.eval_easy_share, **kw)


def prompt_ids(problem: Problem) -> list[int]:
    return [BOS] + encode(problem.prompt)


def max_new_tokens(cfg: Config) -> int:
    """Room for the longest answer (the marker and the digits of the largest sum), the end token and 2 spares."""
    return 1 + len(str(cfg.operands * (10 ** cfg.digits - 1))) + 3


def block_size(cfg: Config) -> int:
    return 1 + cfg.operands * (cfg.digits + 1) + max_new_tokens(cfg)


def model_config(cfg: Config) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB_SIZE, block_size=block_size(cfg), n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)


def teacher_answer(problem: Problem, rng: random.Random, cfg: Config, careful_share: float | None = None) -> str:
    """The imperfect teacher: a correct answer, corrupted (one digit changed) with some probability. It
    first picks a strategy: careful (c, right everywhere) with probability careful_share (default
    --careful-share), else the shortcut (n, right only without carries), each with its own noise."""
    answer, noise = problem.random_answer(rng), cfg.teacher_noise
    share = cfg.careful_share if careful_share is None else careful_share
    if isinstance(problem, CarryProblem) and rng.random() >= share:
        answer = problem.shortcut
    elif isinstance(problem, CarryProblem):
        noise = cfg.careful_noise
    return corrupt(answer, rng) if rng.random() < noise else answer


def careful_share_at(cfg: Config, step: int) -> float:
    """The teacher's careful share at pretraining step `step`: --careful-share-start at step 0, falling
    linearly to --careful-share at --careful-anneal of the steps, then constant. The rare strategy gets
    many examples early, so its skill converges, and the last part of the stage sets the share the
    start must have (the RL experiments depend on it: a start set by the teacher, §10)."""
    end = cfg.careful_anneal * cfg.pretrain_steps
    left = max(0.0, 1 - step / end) if end > 0 else 0.0
    return cfg.careful_share + (cfg.careful_share_start - cfg.careful_share) * left


def teacher_batch(cfg: Config, batch: int, rng: random.Random, device, careful_share: float | None = None):
    """A supervised batch of fresh training-split problems (never a held-out prompt): BOS prompt
    answer EOS. Returns inputs (b, L), targets (b, L) with -100 where no loss applies (prompt, padding).
    With --pretrain-easy-share in [0, 1] that share of the problems has no carry (carry-balanced draws)."""
    seqs, starts = [], []
    while len(seqs) < batch:
        easy = None if cfg.pretrain_easy_share < 0 else rng.random() < cfg.pretrain_easy_share
        problem = random_problem(rng, cfg.digits, cfg.operands, easy)
        if split_of(problem.prompt) != "train":
            continue
        p = prompt_ids(problem)
        seqs.append(p + encode(teacher_answer(problem, rng, cfg, careful_share)) + [EOS])
        starts.append(len(p))
    L = max(map(len, seqs))
    x = torch.tensor([s + [PAD] * (L - len(s)) for s in seqs])  # (b, L), right-padded
    pos = torch.arange(1, L)  # position of each target token
    starts, ends = torch.tensor(starts)[:, None], torch.tensor([len(s) for s in seqs])[:, None]
    # only the completion (answer and EOS) is learned: no loss on the prompt or the padding
    y = x[:, 1:].masked_fill((pos < starts) | (pos >= ends), -100)
    return x[:, :-1].to(device), y.to(device)


def supervised_step(model: GPT, optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of next-token cross-entropy on the teacher's completions (targets -100 are ignored)."""
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def pretrain(cfg: Config, device, log=print) -> GPT:
    """Supervised training on the teacher's answers, fresh problems every step, warm-up then cosine
    decay, long enough to converge: the start policy then reproduces the teacher's mixture (§10), so
    its pass@k and entropy are set by the teacher, not by where training happened to stop.

    The careful way is the rare one (10% of the answers), so it is the slowest to learn: its share
    starts higher and falls to --careful-share (careful_share_at), and the rest of the stage, at
    the final share, sets how often the start chooses it. Converged means each strategy is right as
    often as the teacher's own answers are (teacher_accuracy; experiments/README.md phase 5)."""
    torch.manual_seed(cfg.pretrain_seed)
    rng = random.Random(cfg.pretrain_seed)
    model = GPT(model_config(cfg)).to(device)
    schedule = (f"{cfg.careful_share_start} -> {cfg.careful_share} over the first {cfg.careful_anneal:.0%} of the steps"
                if cfg.careful_anneal else f"{cfg.careful_share}")
    log(f"pretraining a {model.num_params():,}-parameter GPT for {cfg.pretrain_steps} steps of {cfg.pretrain_batch} "
        f"(careful share {schedule}; noise: careful {cfg.careful_noise}, shortcut {cfg.teacher_noise})")
    # OneCycleLR also cycles Adam's beta1 between 0.85 and 0.95, so the 0.9 below is only its starting value
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.pretrain_lr, total_steps=cfg.pretrain_steps,
                                                pct_start=0.05)
    for step in range(cfg.pretrain_steps):
        batch = teacher_batch(cfg, cfg.pretrain_batch, rng, device, careful_share_at(cfg, step))
        loss = supervised_step(model, optimizer, *batch)
        sched.step()
        if step % 200 == 0 or step == cfg.pretrain_steps - 1:
            log(f"  pretrain step {step:4d}  loss {loss.item():.3f}")
    return model


PRETRAIN_FIELDS = ("digits", "operands", "n_layer", "n_head", "n_embd", "teacher_noise", "careful_share",
                   "careful_noise", "careful_share_start", "careful_anneal", "pretrain_easy_share",
                   "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_seed")


def pretrain_key(cfg: Config) -> dict:
    """Everything that shapes the pretrained checkpoint: its settings and the code that makes it (so an
    edit of the RL code keeps the cached checkpoint, and an edit of the teacher does not)."""
    code = "".join(Path(__file__).with_name(f).read_text() for f in ("model.py", "rewards.py"))
    code += "".join(inspect.getsource(f) for f in (pretrain, supervised_step, teacher_answer, careful_share_at, teacher_batch,
                                                prompt_ids)) + VOCAB
    return {"settings": {f: getattr(cfg, f) for f in PRETRAIN_FIELDS},
            "model": dataclasses.asdict(model_config(cfg)),
            "code_sha256": hashlib.sha256(code.encode()).hexdigest()}


def load_or_pretrain(cfg: Config, device, log=print) -> tuple[GPT, Path, float]:
    """The pretrained model, from <ckpt_dir or out_dir>/pretrained-<hash of its key>.pt if it exists,
    else trained now and cached. Returns (model, path, seconds spent training)."""
    key = pretrain_key(cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.ckpt_dir or cfg.out_dir) / f"pretrained-{digest}.pt"
    if path.exists():
        model = load_checkpoint(path, model_config(cfg), key, device)
        log(f"loaded pretrained checkpoint {path}")
        return model, path, 0.0
    t0 = time.time()
    model = pretrain(cfg, device, log)
    save_checkpoint(path, model, key)
    log(f"saved pretrained checkpoint {path}")
    return model, path, time.time() - t0


# %% --- evaluation: pass@1, pass@k, entropy and dead groups on held-out problems -------------------
def mean(xs):
    """Mean of a list, None for an empty one (JSON has no NaN)."""
    return sum(xs) / len(xs) if xs else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c,k)/C(n,k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def rollout_and_score(model, problems, n, cfg: Config, generator):
    """n completions per problem; rewards (len(problems), n), the Rollout, and the decoded texts."""
    prompts = [prompt_ids(p) for p in problems for _ in range(n)]
    roll = sample(model, prompts, max_new_tokens(cfg), cfg.temperature, generator)
    texts = [completion_text(row) for row in roll.tokens.tolist()]
    rewards = [score(problems[i // n], t) for i, t in enumerate(texts)]
    return torch.tensor(rewards, device=roll.mask.device).view(len(problems), n), roll, texts


def group_stats(rewards: torch.Tensor, roll: Rollout, texts: list[str], n: int) -> dict:
    """Metrics of §7 that any batch of groups has: reward, entropy, dead groups, distinct completions,
    and the share of completions that chose the careful strategy."""
    groups = [texts[i:i + n] for i in range(0, len(texts), n)]
    return {"reward": rewards.mean().item(),
            "entropy": ((roll.entropy * roll.mask).sum() / roll.mask.sum()).item(),
            "dead_groups": (rewards.std(dim=1) == 0).float().mean().item(),
            "distinct": sum(len(set(g)) for g in groups) / len(groups),
            "careful": sum(t.startswith(CAREFUL) for t in texts) / len(texts)}


@torch.no_grad()
def evaluate(model, problems, cfg: Config, seed, show: int = 0):
    """Held-out metrics with a fixed sampling seed, so two methods are compared on equal draws: pass@1
    and pass@k (unbiased, with bootstrap standard errors over problems), distinct correct answers among
    the first k samples (answer-level diversity, §7), and the same on hard problems (those with a
    carry, where only the careful strategy is right) with the careful share there. A batched model's
    members (batched.py) are evaluated at once, each with its own seed: seed a list, a dict per member."""
    seeds = [seed] if isinstance(seed, int) else seed
    gens = [torch.Generator(device=next(model.parameters()).device).manual_seed(s) for s in seeds]
    n, P = cfg.eval_samples, len(problems)
    rewards, roll, texts = rollout_and_score(model, problems * len(seeds), n, cfg, gens)
    out = [held_out_metrics(problems, rewards[i * P:(i + 1) * P], roll.member(i, len(seeds)),
                            texts[i * P * n:(i + 1) * P * n], cfg, s, show) for i, s in enumerate(seeds)]
    return out[0] if isinstance(seed, int) else out


def held_out_metrics(problems, rewards, roll: Rollout, texts: list[str], cfg: Config, seed: int, show: int) -> dict:
    """evaluate's numbers for one policy's samples: rewards (P, n), its Rollout and texts (P * n)."""
    n, k = cfg.eval_samples, cfg.k
    m = {f"eval_{key}": v for key, v in group_stats(rewards, roll, texts, n).items()}
    correct = rewards.sum(dim=1).long().tolist()
    per = {"pass@1": [pass_at_k(n, c, 1) for c in correct], f"pass@{k}": [pass_at_k(n, c, k) for c in correct]}
    outs = [texts[i * n:(i + 1) * n] for i in range(len(problems))]
    per["distinct_correct"] = [len({t for t, x in zip(o[:k], rewards[i, :k].tolist()) if x}) for i, o in enumerate(outs)]
    hard = [i for i, p in enumerate(problems) if not getattr(p, "easy", True)]
    if hard:
        per["careful_hard"] = [sum(t.startswith(CAREFUL) for t in outs[i]) / n for i in hard]
    for key, vals in per.items():
        m[f"eval_{key}"] = mean(vals)
        if hard and key != "careful_hard":
            m[f"eval_hard_{key}"] = mean([vals[i] for i in hard])
    for key in ("pass@1", f"pass@{k}"):
        m[f"eval_{key}_se"] = bootstrap_se(per[key], seed)
    m["samples"] = [(problems[i], outs[i][:8]) for i in range(show)]
    return m


@torch.no_grad()
def strategy_accuracy(model, problems, cfg: Config, seed: int) -> dict:
    """How well each strategy is known, apart from how often it is chosen: the marker is given (the
    completion starts with "c" or "n") and the rest sampled, eval_samples times per problem; the share
    right on easy and on hard problems, to set beside what the teacher's noise allows (teacher_accuracy)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = {}
    for name, marker in (("careful", CAREFUL), ("shortcut", SHORTCUT)):
        prompts = [prompt_ids(p) + encode(marker) for p in problems for _ in range(cfg.eval_samples)]
        roll = sample(model, prompts, max_new_tokens(cfg) - 1, cfg.temperature, gen)
        right = [score(problems[i // cfg.eval_samples], marker + completion_text(row))
                 for i, row in enumerate(roll.tokens.tolist())]
        for kind, easy in (("easy", True), ("hard", False)):
            hits = [x for i, x in enumerate(right) if problems[i // cfg.eval_samples].easy == easy]
            out[f"{name}_acc_{kind}"] = mean(hits)
    return out


def teacher_accuracy(problems, cfg: Config) -> dict:
    """What the teacher's noise allows: the share of the teacher's own answers that are right, per
    strategy (marker given) on easy and on hard problems, the keys of strategy_accuracy. Exact, by
    enumerating rewards.corrupt's choices (a digit position, then a different digit): a corrupted
    careful answer is always wrong, but a corrupted shortcut on a hard problem is right when the
    change happens to fix its one wrong digit, so the shortcut's value there is small, not 0."""
    def right_after_corruption(problem, answer):
        positions = [i for i, ch in enumerate(answer) if ch.isdigit()]
        hits = 0.0
        for i in positions:  # corrupt picks a position, then one of these digits, each uniformly
            choices = corruption_digits(answer, i)
            hits += sum(score(problem, answer[:i] + d + answer[i + 1:]) for d in choices) / len(choices)
        return hits / len(positions)

    out = {}
    for name, noise, answer_of in (("careful", cfg.careful_noise, lambda p: p.answer),
                                   ("shortcut", cfg.teacher_noise, lambda p: p.shortcut)):
        for kind, easy in (("easy", True), ("hard", False)):
            ps = [p for p in problems if p.easy == easy]
            out[f"{name}_acc_{kind}"] = mean([(1 - noise) * score(p, answer_of(p)) +
                                              noise * right_after_corruption(p, answer_of(p)) for p in ps])
    return out


def held_out_numbers(m: dict, k: int, n_problems: int) -> dict:
    """The evaluation's numbers as summary.json keeps them for the start and the end of each run: the
    eval_ prefix dropped and pass@k stored as "pass@k" whatever k is, so runs with another k compare."""
    out = {"k": k, "n_problems": n_problems}
    for key, v in m.items():
        if key.startswith("eval_"):
            out[key[5:].replace(f"pass@{k}", "pass@k")] = v
    return out


@torch.no_grad()
def logp_adv_covariance(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> dict:
    """Cui et al.'s entropy driver (§7): the covariance of log pi(o_t) and A_t over the batch's valid
    tokens, and the parts of it that positive and negative tokens contribute (tokens with A = 0, of
    dead groups, contribute the rest, which is 0 when the mean advantage is). A
    large positive covariance (confident tokens rewarded, unlikely ones penalised) means entropy falls.
    logp, mask: (B, T); advantages: (B,)."""
    valid = mask > 0
    x, a = logp[valid], advantages[:, None].expand_as(logp)[valid]
    terms = (x - x.mean()) * (a - a.mean()) / x.numel()
    return {"cov_logp_adv": terms.sum().item(), "cov_logp_adv_pos": terms[a > 0].sum().item(),
            "cov_logp_adv_neg": terms[a < 0].sum().item()}


# %% --- the RL loop -----------------------------------------------------------------------------------
def rl_step(model, optimizer, batches: list, cfg: Config, methods: list[str], gens: list,
            reference=None) -> tuple[list[dict], dict]:
    """One rollout batch and mu = minibatches x epochs optimizer steps on it. Returns (metrics, timings).

    Why mu > 1 matters: the first minibatch is on-policy (r = 1, every method gives the same
    gradient, §2); only from the second update on does pi_theta differ from pi_old, r moves, and the
    methods' weights w(r) differ (§3-§5). mu is how far off-policy each batch is trained.

    `model` holds S policies (batched.py's StackedGPT; S = 1 is the plain one-policy step), each with
    its own prompts batches[s], method methods[s] and sampling stream gens[s]. Their rows are
    member-major, so every (S*B, ...) tensor is viewed as (S, B, ...) and the loss is the sum of the
    members' own token means: each member's gradient is its own. Returns one metrics dict per member;
    a member whose loss turns non-finite gets "error" and no update from then on (its grads are zeroed).
    `reference`: the start policy (as many members), for --kl-coef.
    """
    S, t0 = len(methods), time.time()
    model.eval()
    rewards, roll, texts = rollout_and_score(model, [p for batch in batches for p in batch], cfg.group, cfg, gens)
    adv = group_advantages(rewards, cfg.adv_std).view(S, -1)  # (S, B): each member's groups are its own
    B, device = adv.size(1), adv.device
    with torch.no_grad():
        # old_logp: the same model state, precision (fp32) and temperature that sampled, through the
        # training path. The sampler's own log-probs agree to ~1e-5 (cached vs uncached kernels sum in
        # a different order); recomputing makes the first minibatch's ratio 1 up to rounding, as in verl.
        every = torch.arange(S * B, device=device)
        old_logp = token_logps(model, roll, every, cfg.temperature)[0].view(S, B, -1)  # (S, B, T)
        # the start policy's log-probs, for the KL term of the shipped loss (§5): only when it is on
        ref_logp = token_logps(reference, roll, every, cfg.temperature)[0].view(S, B, -1) if cfg.kl_coef else old_logp
    t1 = time.time()
    mask, P = roll.mask.view(S, B, -1), len(batches[0])
    metrics = []
    for s in range(S):
        member = roll.member(s, S)
        m = group_stats(rewards[s * P:(s + 1) * P], member, texts[s * B:(s + 1) * B], cfg.group)
        m["sampler_mismatch"] = ((old_logp[s] - member.logp).abs() * mask[s]).max().item()
        metrics.append(m | logp_adv_covariance(old_logp[s], adv[s], mask[s]))
    updates, failed = [[] for _ in range(S)], torch.zeros(S, dtype=torch.bool, device=device)
    offsets = torch.arange(S, device=device)[:, None] * B  # (S, 1): member s's rows start at s * B
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.stack([torch.randperm(B, generator=g, device=g.device) for g in gens]).to(device)  # (S, B)
        for i, cols in enumerate(perm.tensor_split(cfg.minibatches, dim=1)):  # exactly `minibatches` pieces
            logp, entropy = (x.view(S, cols.size(1), -1) for x in
                             token_logps(model, roll, (cols + offsets).flatten(), cfg.temperature))
            rows = lambda x: x.gather(1, cols.view(S, -1, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))
            old, ref, msk, a = rows(old_logp), rows(ref_logp), rows(mask), rows(adv)  # (S, b, T) x 3, (S, b)
            if epoch == 0 and i == 0:
                # no update has happened yet, so pi_theta == pi_old and every ratio is 1 up to rounding (§2)
                drift = ((logp - old).abs() * msk).max().item()
                assert drift < 1e-5, f"first minibatch is not on-policy: max |log r| = {drift:.2e}"
            losses, member_metrics = torch.zeros(S, device=device), [{} for _ in range(S)]
            for method in dict.fromkeys(methods):  # the members of each method in one call
                idx = [s for s in range(S) if methods[s] == method]
                loss, m = policy_loss(method, logp[idx], old[idx], a[idx], msk[idx], cfg.eps_low, cfg.eps_high,
                                      cfg.clip_c, entropy=entropy[idx])
                if cfg.kl_coef:  # the shipped loss's k3 KL to the start policy (§5), for every method alike
                    loss = loss + cfg.kl_coef * kl_k3(logp[idx], ref[idx], msk[idx])
                losses = losses.index_put((torch.tensor(idx, device=device),), loss)
                for j, s in enumerate(idx):
                    member_metrics[s] = {key: v[j] for key, v in m.items() if not math.isnan(v[j])}
            for s in (~torch.isfinite(losses) & ~failed).nonzero().flatten().tolist():
                metrics[s]["error"] = f"non-finite loss ({losses[s].item()}) at minibatch {i} of epoch {epoch}"
            failed |= ~torch.isfinite(losses)
            optimizer.zero_grad(set_to_none=True)
            losses.where(~failed, 0.0).sum().backward()
            if failed.any():  # a failed member learns nothing more (its gradient may be nan)
                for p in model.parameters():
                    p.grad[failed] = 0.0
            grad_norms = model.clip_grad_norm_(cfg.grad_clip).tolist()
            optimizer.step()
            for s in range(S):
                updates[s].append(member_metrics[s] | {"grad_norm": grad_norms[s]})
    for m, ups in zip(metrics, updates):
        keys = dict.fromkeys(key for u in ups for key in u)
        m.update({key: mean([u[key] for u in ups if key in u]) for key in keys})  # mean over the mu updates
        m.update({f"last_{key}": ups[-1][key] for key in ("abs_log_ratio", "below1_pos", "clip_dual_pos") if key in ups[-1]})
    return metrics, {"rollout_s": t1 - t0, "update_s": time.time() - t1}


def sampling_seed(seed: int, step: int) -> int:
    """The rollout stream of RL step `step` of seed `seed`: the same for every method of a seed (paired
    runs), and distinct for every (seed, step) while steps stay below 1,000,003 (a prime)."""
    return 1_000_003 * seed + step


def eval_seed(seed: int) -> int:
    """The held-out sampling draws of seed `seed`'s evaluations: the same for every method and step of a
    seed, so their differences are the policies', not the draws'. (Seed 0's equal the start's, seed 1.)"""
    return seed * 7919 + 1


def console_line(method, seed, step, m, k) -> str:
    ev = (f"pass@1 {m['eval_pass@1']:.3f}+-{m['eval_pass@1_se']:.3f} pass@{k} {m[f'eval_pass@{k}']:.3f}"
          f"+-{m[f'eval_pass@{k}_se']:.3f} ent {m['eval_entropy']:.3f}" +
          (f" careful(hard) {m['eval_careful_hard']:.2f}" if "eval_careful_hard" in m else "")
          if "eval_pass@1" in m else "")
    return (f"{method:4s} s{seed:<3d} step {step:4d} | reward {m['reward']:.3f} ent {m['entropy']:.3f} "
            f"dead {m['dead_groups']:.2f} |log r| {m.get('abs_log_ratio', 0):.3f} "
            f"clip+ {m.get('clip_high_pos', 0):.3f} dual+ {m.get('clip_dual_pos', 0):.3f} | {ev}")


def show_samples(method, samples):
    """A few held-out prompts, each with the teacher's answer and 8 of the policy's completions."""
    for problem, outs in samples:
        marks = " ".join(f"{o or '∅'}{'✓' if score(problem, o) else '✗'}" for o in outs)
        print(f"      {method:4s} {problem.prompt}{problem.answer:<8s} -> {marks}")


EVAL_ROWS = 65_536  # sampled rows per evaluation batch: a batched model's members are evaluated in chunks


def evaluate_members(model: StackedGPT, problems, cfg: Config, seeds: list[int], show: int) -> list[dict]:
    """evaluate() for every member of a batched model, a chunk of members at a time (bounded memory)."""
    chunk = max(1, EVAL_ROWS // (len(problems) * cfg.eval_samples))
    if model.n_members <= chunk:
        return evaluate(model, problems, cfg, seeds, show)
    out = []
    for first in range(0, model.n_members, chunk):
        members = range(first, min(first + chunk, model.n_members))
        part = StackedGPT(model.config, [model.member_state_dict(s) for s in members])
        out += evaluate(part, problems, cfg, [seeds[s] for s in members], show)
    return out


def train_rl(base_state, cfg: Config, pairs: list[tuple[str, int]], device, train_pool, test_set, start: dict,
             log_file) -> list[dict]:
    """RL runs of (method, seed) pairs from the pretrained state, trained side by side as one batched model
    (batched.py; one pair is the plain run). Returns their summary entries (and writes metrics lines)."""
    S, methods = len(pairs), [method for method, _ in pairs]
    model = StackedGPT(model_config(cfg), [base_state] * S)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)  # per element: S optimizers
    reference = StackedGPT(model_config(cfg), [base_state] * S).eval() if cfg.kl_coef else None  # for the KL term
    prompt_rngs = [random.Random(seed) for _, seed in pairs]  # same prompt stream for every method of a seed: paired
    gens = [torch.Generator(device=device) for _ in pairs]
    timings = {"rollout_s": 0.0, "update_s": 0.0, "eval_s": 0.0, "members": S}  # of the whole batch
    runs = [{"method": method, "seed": seed, "initial": start, "final": None, "timings": timings} for method, seed in pairs]
    for step in range(1, cfg.steps + 1):
        for gen, (_, seed) in zip(gens, pairs):
            gen.manual_seed(sampling_seed(seed, step))
        batches = [rng.sample(train_pool, cfg.prompts) for rng in prompt_rngs]
        ms, t = rl_step(model, optimizer, batches, cfg, methods, gens, reference)
        for key, v in t.items():
            timings[key] += v
        for run, m in zip(runs, ms):
            if "error" in m and "error" not in run:  # only this run stops; the others go on
                run["error"] = f"{run['method']} seed {run['seed']}: {m['error']} at step {step}; metrics so far are in {log_file.name}"
                print(f"error: {run['error']}", file=sys.stderr)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            t0 = time.time()
            problems = test_set if step == cfg.steps else test_set[:cfg.curve_problems]
            evs = evaluate_members(model, problems, cfg, [eval_seed(seed) for _, seed in pairs], 0 if cfg.quiet else 3)
            timings["eval_s"] += time.time() - t0
            for run, m, ev in zip(runs, ms, evs):
                m.update(ev, eval_problems=len(problems))
                if step == cfg.steps and "error" not in run:
                    run["final"] = held_out_numbers(ev, cfg.k, len(problems))
                    if "careful_hard" in run["final"]:  # a held-out set with hard problems
                        run["locked"] = locked_in(run["final"])  # onto the shortcut: the policy forgot how to carry
        for run, m in zip(runs, ms):
            if "error" in run or not (step % cfg.log_every == 0 or step == cfg.steps or "samples" in m):
                continue
            samples = m.pop("samples", [])
            print(console_line(run["method"], run["seed"], step, m, cfg.k))
            show_samples(run["method"], samples)
            log_file.write(json.dumps({"method": run["method"], "seed": run["seed"], "step": step, **m}) + "\n")
        log_file.flush()
        if all("error" in run for run in runs):
            break
    return runs


# %% --- main: every method from the same checkpoint on the same seeds (paired, §10) ------------------
def free_memory(device) -> int:
    """Bytes free for the batched model: the GPU's free memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # not Linux: no estimate, so no check
        return 2 ** 62


def fail(message: str, status: int = 2) -> int:
    print(f"nano_aspo.py: error: {message}", file=sys.stderr)
    return status


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        device = pick_device(cfg.device)
    except ValueError as e:
        return fail(e)
    t_start = time.time()
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return fail(f"--out-dir {cfg.out_dir}: {e.strerror}")
    problems = {}
    for split, name in (("train", "train-problems"), ("test", "eval-problems")):
        try:
            problems[split] = task_problems(cfg, split)
        except ValueError as e:  # a problem space too small for the requested count
            return fail(f"--{name} too large for this task: {e}")
    train_pool, test_set = problems["train"], problems["test"]
    try:
        model, ckpt, pretrain_s = load_or_pretrain(cfg, device)
    except RuntimeError as e:  # a corrupt or foreign checkpoint
        return fail(e, status=1)
    print(f"device {device}, model {model.num_params():,} parameters, mu = {cfg.mu} updates per rollout batch")
    t0 = time.time()
    # the start: every run of every seed begins here, so its held-out numbers are measured once
    initial = evaluate(model, test_set, cfg, seed=1, show=0 if cfg.quiet else 3)
    init_s = time.time() - t0
    start = held_out_numbers(initial, cfg.k, len(test_set)) | strategy_accuracy(model, test_set, cfg, seed=2)
    start["teacher"] = teacher_accuracy(test_set, cfg)  # what the start should reach: the console says if it did
    print(start_line(start, cfg.k))
    show_samples("init", initial.pop("samples"))
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [(method, seed) for seed in (cfg.seed_list if cfg.steps > 0 else []) for method in cfg.method_list]
    size = max(1, min(cfg.max_members, len(pairs))) if cfg.batch_seeds else 1  # members per batched model
    need, have = size * member_bytes(model_config(cfg), cfg.prompts * cfg.group, block_size(cfg)), free_memory(device)
    if pairs and need > have:
        return fail(f"--max-members {size}: {size} members need about {need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB "
                    "are free; lower --max-members (the runs then go in chunks)")
    runs, status = [], 0
    with open(out / "metrics.jsonl", "w") as log_file:
        try:
            for method, seed in pairs:
                log_file.write(json.dumps({"method": method, "seed": seed, "step": 0, **initial,
                                           "eval_problems": len(test_set)}) + "\n")
            for first in range(0, len(pairs), size):
                chunk = train_rl(base_state, cfg, pairs[first:first + size], device, train_pool, test_set, start, log_file)
                for run in chunk:
                    run["timings"]["initial_eval_s"] = init_s
                runs += chunk
            status = int(any("error" in run for run in runs))
        except KeyboardInterrupt:
            print(f"\ninterrupted: metrics so far are in {out / 'metrics.jsonl'}", file=sys.stderr)
            status = 130
    comparison = paired_comparison(runs)
    judged = [m for m in cfg.method_list if any("locked" in r for r in runs)]  # lock-in needs hard problems
    summary = {"config": dataclasses.asdict(cfg), "wall_time_s": time.time() - t_start, "pretrain_s": pretrain_s,
               "checkpoint": str(ckpt), "start": start, "runs": runs, "comparison": comparison,
               "lockin": [lockin_share(runs, m) for m in judged],
               "lockin_paired": [paired_lockin(runs, m) for m in judged if m != "grpo" and "grpo" in judged]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n" + "\n".join(summary_lines(start, runs, comparison, cfg.k)))
    print(f"wall time {time.time() - t_start:.1f}s; wrote {out / 'metrics.jsonl'} and {out / 'summary.json'}")
    return status


if __name__ == "__main__":
    if "ipykernel" in sys.modules:  # stepping through the # %% cells in Jupyter or VS Code: no CLI, no exit
        main([])
    else:
        sys.exit(main())

"""nano-aspo: GRPO and ASPO side by side on a tiny GPT that learns arithmetic.

Read top to bottom: config, tokenizer, sampling, advantages, the losses (the heart), pretraining,
evaluation, the RL loop, the comparison. The math is ASPO.md (beside this file); "§n" below cites its
sections. ASPO is Wang et al., "Asymmetric Importance Sampling Policy Optimization", arXiv 2510.06062.

    python nano_aspo.py                  # pretrain once, then GRPO and ASPO from the same checkpoint
    python nano_aspo.py --seeds 0,1,2    # three paired seeds
    python nano_aspo.py --help
"""
# %%
import argparse
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import itertools
import json
import math
import operator
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F

import rewards
from model import GPT, GPTConfig, KVCache

METHODS = ("grpo", "aspo", "nois", "posmean", "aspo-hardneg")


# %% --- config: one dataclass, filled by argparse; the defaults are the demo ---------------------
def opt(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # run
    methods: str = opt("grpo,aspo", f"comma-separated methods to train, from {','.join(METHODS)}, or "
                                    "FILE.py:FUNCTION: your own verl-style policy loss (check_loss.py)")
    seeds: str = opt("0", "comma-separated RL seeds; each runs every method from the same checkpoint (paired)")
    out_dir: str = opt("out", "directory for metrics.jsonl, summary.json and (unless --ckpt-dir) the cached checkpoint")
    ckpt_dir: str = opt("", "directory of the cached pretrained checkpoint, shared by runs (default: --out-dir)")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps")
    quiet: bool = opt(False, "do not print sample completions at each evaluation")
    # task (rewards.py)
    task: str = opt("carry", "carry: add, answering with a strategy marker and the sum's digits least significant "
                             "first (c: with carries, right everywhere; n: no carries, right only on easy problems); "
                             "arith: compute the expression; split: write N as a sum of --operands positive numbers "
                             "(many correct answers)")
    digits: int = opt(3, "carry, arith: each operand is uniform in [0, 10**digits); split: N has this many digits")
    operands: int = opt(2, "carry, arith: numbers per problem; split: positive parts of the sum")
    ops: str = opt("+", "arith: operators problems may use, a subset of '+-*'")
    train_problems: int = opt(800, "size of the RL prompt pool (pretraining draws fresh problems every step)")
    easy_share: float = opt(0.95, "carry: share of the RL prompt pool without any carry (easy problems, where the "
                                  "shortcut is right; about 17 percent of all 3-digit sums)")
    eval_easy_share: float = opt(0.5, "carry: share of the held-out set without any carry (half easy, half hard: "
                                      "the metrics weigh both kinds equally)")
    # model (model.py)
    n_layer: int = opt(2, "transformer blocks")
    n_head: int = opt(4, "attention heads")
    n_embd: int = opt(64, "embedding width")
    # pretraining: the supervised stage that makes the starting policy
    teacher_noise: float = opt(0.05, "share of pretraining answers the teacher corrupts (one digit changed); "
                                     "carry: of its shortcut (n) answers")
    careful_share: float = opt(0.1, "carry: share of the teacher's answers that use the careful strategy (c)")
    careful_noise: float = opt(0.2, "carry: share of the teacher's careful answers it corrupts (the careful way is "
                                    "right on every problem but less reliable)")
    pretrain_steps: int = opt(4000, "supervised steps")
    pretrain_batch: int = opt(64, "sequences per supervised step")
    pretrain_lr: float = opt(4e-3, "peak learning rate of the supervised stage "
                                   "(OneCycleLR: warm-up over 5 percent of the steps, cosine decay)")
    pretrain_seed: int = opt(1234, "seed of the pretraining stage (one checkpoint shared by all RL seeds)")
    # RL
    steps: int = opt(100, "RL steps (one rollout batch each)")
    prompts: int = opt(32, "prompts per RL step (P)")
    group: int = opt(8, "completions per prompt (G)")
    temperature: float = opt(1.0, "sampling temperature (also used for old and new log-probs)")
    lr: float = opt(2e-4, "RL learning rate (AdamW)")
    minibatches: int = opt(8, "optimizer steps per epoch over one rollout batch")
    epochs: int = opt(4, "passes over one rollout batch; mu = minibatches * epochs updates per batch")
    adv_std: bool = opt(True, "divide advantages by the group std (§1); --no-adv-std gives Dr. GRPO")
    grad_clip: float = opt(1.0, "max global gradient norm")
    eps_low: float = opt(0.2, "lower clip range: ratios below 1 - eps_low are clipped (§4)")
    eps_high: float = opt(0.28, "upper clip range (clip-higher): ratios above 1 + eps_high are clipped (§4)")
    clip_c: float = opt(3.0, "dual-clip constant c (§4 hard, §5 soft)")
    # evaluation
    eval_every: int = opt(20, "evaluate on held-out problems every this many RL steps")
    eval_problems: int = opt(500, "held-out problems of the start and final evaluations")
    curve_problems: int = opt(100, "held-out problems of the evaluations in between (the first of the full set; "
                                   "cheaper, for the curves)")
    eval_samples: int = opt(16, "samples per held-out problem (n of the pass@k estimator)")
    k: int = opt(8, "k of pass@k (k <= eval_samples)")
    log_every: int = opt(5, "write a metrics line every this many RL steps")

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
            try:  # load a user's loss and call it once now, so that a broken one stops before pretraining
                logp = torch.zeros(1, 2, requires_grad=True)
                verl_loss(load_verl_loss(spec), logp, logp.detach(), torch.ones(1), torch.ones(1, 2))
            except ValueError as e:
                need(False, "methods", f"{spec}: {e}")
        try:
            seeds = self.seed_list
        except ValueError:
            seeds = None
        need(seeds, "seeds", f"must be comma-separated integers (got {self.seeds!r})")
        need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
             "device", f"must be auto, cpu, cuda, cuda:N or mps (got {self.device!r})")
        need(self.steps >= 0, "steps", f"must be >= 0 (got {self.steps}; 0 evaluates the start only)")
        for flag in ("digits", "n_layer", "n_head", "n_embd", "pretrain_steps", "pretrain_batch", "curve_problems",
                     "prompts", "minibatches", "epochs", "eval_every", "eval_problems", "eval_samples",
                     "log_every", "train_problems"):
            need(getattr(self, flag) >= 1, flag.replace("_", "-"), f"must be >= 1 (got {getattr(self, flag)})")
        need(self.task in rewards.TASKS, "task", f"must be one of {','.join(rewards.TASKS)} (got {self.task!r})")
        need(self.operands >= 2, "operands", f"must be >= 2 (got {self.operands})")
        need(self.ops and set(self.ops) <= set(rewards.OPS), "ops", f"must be a subset of {rewards.OPS!r} (got {self.ops!r})")
        need(self.n_embd % self.n_head == 0, "n-embd", f"must be divisible by --n-head ({self.n_embd} % {self.n_head} != 0)")
        need(self.group >= 2, "group", f"must be >= 2: a group of one has no advantage (got {self.group})")
        need(self.temperature > 0, "temperature", f"must be > 0 (got {self.temperature})")
        for flag in ("teacher_noise", "careful_noise"):
            need(0 <= getattr(self, flag) < 1, flag.replace("_", "-"), f"must be in [0, 1) (got {getattr(self, flag)})")
        for flag in ("careful_share", "easy_share", "eval_easy_share"):
            need(0 <= getattr(self, flag) <= 1, flag.replace("_", "-"), f"must be in [0, 1] (got {getattr(self, flag)})")
        need(self.lr > 0 and self.pretrain_lr > 0, "lr", f"and --pretrain-lr must be > 0 (got {self.lr}, {self.pretrain_lr})")
        need(self.grad_clip > 0, "grad-clip", f"must be > 0 (got {self.grad_clip})")
        need(0 < self.eps_low < 1, "eps-low", f"must be in (0, 1) (got {self.eps_low})")
        need(0 < self.eps_high < 1, "eps-high", f"must be in (0, 1) (got {self.eps_high})")
        need(self.clip_c > 1, "clip-c", f"must be > 1 (got {self.clip_c})")
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
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"])
    cfg = Config(**vars(parser.parse_args(argv)))
    cfg.validate()
    return cfg


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available on this machine")
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


@torch.no_grad()
def sample(model: GPT, prompts: list[list[int]], max_new_tokens: int, temperature: float,
           generator: torch.Generator, use_cache: bool = True) -> Rollout:
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
            tok = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)
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


def token_logps(model: GPT, roll: Rollout, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """Training path: log-probs (len(rows), T) of the completion tokens under the current model, by one
    plain forward pass (no cache) over prompt + completion."""
    seq = roll.sequences[rows]
    logits = model(seq[:, :-1]).float() / temperature  # (b, L-1, V): position j predicts token j+1
    T = roll.tokens.size(1)
    pos = roll.prompt_lens[rows, None] - 1 + torch.arange(T, device=seq.device)  # (b, T), < L - 1 by construction
    logits = logits.gather(1, pos[..., None].expand(-1, -1, logits.size(-1)))  # (b, T, V)
    return F.log_softmax(logits, dim=-1).gather(2, roll.tokens[rows][..., None]).squeeze(2)


# %% --- advantages (§1) ----------------------------------------------------------------------------
def group_advantages(rewards_: torch.Tensor, use_std: bool = True) -> torch.Tensor:
    """rewards (P, G) -> advantages (P, G): reward minus its group mean, divided by the group std
    (sample std, as verl) unless use_std is False (Dr. GRPO). A group of equal rewards gets zeros."""
    centered = rewards_ - rewards_.mean(dim=1, keepdim=True)
    if not use_std:
        return centered
    return centered / (rewards_.std(dim=1, keepdim=True) + 1e-6)


# %% --- the losses, side by side (§3-§5) -----------------------------------------------------------
# Each loss is L = -(1/N) sum_t A_t * (something whose gradient is w_t * grad logp_t), N = valid tokens.
# What differs between methods is only the weight w_t(r_t, sign A_t):
#   method  A > 0                                     A < 0
#   grpo    r (r <= 1+eps_high), else 0               r (1-eps_low <= r <= c), else 0
#   aspo    1/r (1/c <= r <= 1+eps_high), c (r < 1/c), 0 above   r (1-eps_low <= r <= c), c (r > c), 0 below
#   nois    1 where grpo's weight is r, else 0        (the ASPO paper's "no IS" ablation)
#   posmean rbar (mean r of the completion) where r <= 1+eps_high, else 0;  A < 0 as grpo   (paper's ladder, §9)
#   aspo-hardneg  A > 0 as aspo;  A < 0 as grpo (hard dual-clip): separates the flip from the soft negative clip (§5)
def policy_loss(method: str, logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.28, clip_c: float = 3.0):
    """logp, old_logp, mask: (B, T); advantages: (B,). Returns (token-mean loss, metrics dict)."""
    A = advantages[:, None].expand_as(logp)  # (B, T): every token of a completion shares its advantage
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()  # r_t of §2, log-ratio clamped as the reference does
    pos, neg = A > 0, A < 0
    # PPO-clip with clip-higher (§4): min(r A, clip(r) A), written as a max over losses
    ppo = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    # §4 dual-clip: for A < 0 the loss is capped at -c A, so r > c gets no gradient
    grpo = torch.where(neg, torch.minimum(ppo, -A * clip_c), ppo)
    unit = (logp - logp.detach()).exp()  # value 1, gradient grad logp: "weight 1" for any term it multiplies
    if method in ("aspo", "aspo-hardneg"):
        # §5 positive tokens: p = min(r, 1+eps_high); loss -A (p/sg p)/sg p has value -A/p and gradient
        # weight 1/r (zero where p is the constant 1+eps_high); where 1/r > c, the soft dual-clip
        # -A c logp gives weight exactly c instead
        p = ratio.clamp(max=1 + eps_high)
        flipped = torch.where(ratio < 1 / clip_c, -A * clip_c * logp, -A * (p / p.detach()) / p.detach())
        if method == "aspo":  # §5 negative tokens: PPO-clip, and the soft dual-clip (weight c) above c
            negative = torch.where(ratio > clip_c, -A * clip_c * logp, ppo)
        else:  # GRPO's hard dual-clip (weight 0 above c): only the flip differs from grpo
            negative = grpo
        per_token = torch.where(pos, flipped, negative)
    elif method == "grpo":
        per_token = grpo
    elif method == "nois":
        # no importance weight: w = 1 wherever grpo's weight is r, 0 wherever grpo clips
        keep = torch.where(pos, ratio <= 1 + eps_high, (ratio >= 1 - eps_low) & (ratio <= clip_c))
        per_token = -A * unit * keep
    elif method == "posmean":
        # §9's ladder step: each positive completion's tokens get its mean ratio rbar (no gradient
        # through rbar) where grpo's token clip lets them through; negatives exactly as grpo
        rbar = ((ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)).detach()  # (B, 1)
        per_token = torch.where(pos, -A * rbar * unit * (ratio <= 1 + eps_high), grpo)
    elif ".py:" in method:  # a user's verl-style loss (--methods FILE.py:FUNCTION, check_loss.py): see verl_loss
        return verl_loss(load_verl_loss(method), logp, old_logp, advantages, mask, eps_low, eps_high, clip_c)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)} or FILE.py:FUNCTION")
    n_valid = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / n_valid
    return loss, ratio_metrics(ratio.detach(), A, mask, eps_low, eps_high, clip_c)


@torch.no_grad()
def ratio_metrics(ratio, A, mask, eps_low, eps_high, clip_c) -> dict:
    """Clip fractions (low, high, dual) and ratio statistics, split by the sign of the advantage (§7).
    'dual' is r > c for A < 0 (grpo's weight is 0 there, aspo's is c) and r < 1/c for A > 0 (grpo's
    weight is r < 1/c there, aspo's is c): the soft dual-clip of §5. 'below1' is r < 1, where the flip
    1/r and grpo's r differ in direction."""
    valid = mask > 0
    m = {"abs_log_ratio": (ratio[valid].log().abs().mean().item() if valid.any() else 0.0)}
    for name, sign in (("pos", A > 0), ("neg", A < 0)):
        r = ratio[valid & sign]
        if r.numel() == 0:
            continue
        dual = r < 1 / clip_c if name == "pos" else r > clip_c
        m.update({f"clip_low_{name}": (r < 1 - eps_low).float().mean().item(),
                  f"clip_high_{name}": (r > 1 + eps_high).float().mean().item(),
                  f"clip_dual_{name}": dual.float().mean().item(),
                  f"below1_{name}": (r < 1).float().mean().item(),
                  f"ratio_min_{name}": r.min().item(), f"ratio_mean_{name}": r.mean().item(),
                  f"ratio_max_{name}": r.max().item()})
    return m


# A user's own policy loss, called the way verl calls one (--methods FILE.py:FUNCTION; check_loss.py). A loss
# written for a verl fork then trains here beside the built-in methods and is weighed by the same per-token
# weight view (§3): its gradient, like theirs, is -(1/N) sum_t A_t w_t grad logp_t for some w_t(r_t, sign A_t).
VERL_TENSORS = ("old_log_prob", "log_prob", "advantages", "response_mask")  # verl passes these by keyword
VERL_OPTIONS = ("loss_agg_mode", "config", "rollout_is_weights")  # and these (the last since verl 0.6.0)


class VerlConfig(dict):
    """The clip settings under verl's actor-config names, readable as verl's own losses read them:
    config.clip_ratio_low, config["clip_ratio_low"] or config.get("clip_ratio_c", 3.0)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__


def verl_params(fn) -> list[str]:
    """The parameters verl_loss passes to fn, by name: verl's four tensors, loss_agg_mode, config and
    rollout_is_weights where fn takes them, and an all-true mask for any other required parameter named *mask.
    ValueError naming a parameter that verl's policy-loss call would leave unfilled."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise ValueError("its signature cannot be read") from None
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for name in VERL_TENSORS:
        if name not in params and not takes_any:
            raise ValueError(f"it does not take {name}, one of the keyword arguments verl passes "
                             f"({', '.join(VERL_TENSORS + VERL_OPTIONS)})")
    names = []
    for name, p in params.items():
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if required and p.kind is p.POSITIONAL_ONLY:
            raise ValueError(f"its parameter {name!r} is positional-only; verl passes everything by keyword")
        if name in VERL_TENSORS or name in VERL_OPTIONS or (required and name.endswith("mask")):
            names.append(name)
        elif required:
            raise ValueError(f"it requires a parameter {name!r} that verl's policy-loss call does not pass")
    return names + [n for n in VERL_TENSORS if n not in names]  # the rest go through **kwargs


@functools.lru_cache(maxsize=None)  # loaded once per run (failures are not cached)
def load_verl_loss(spec: str):
    """'path/to/file.py:function' -> that function, imported from the file (nothing to install). ValueError
    (one line) for a missing file or function, something not callable, or a parameter verl would not fill."""
    path, _, name = spec.rpartition(":")
    if not path.endswith(".py") or not name:
        raise ValueError("expected FILE.py:FUNCTION")
    if not Path(path).is_file():
        raise ValueError(f"no such file {path}")
    module_name = "nano_aspo_user_" + hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # some code looks its module up while it is imported (dataclasses)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ValueError(f"importing {path} raised {one_line(e)}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise ValueError(f"{path} has no function {name!r}")
    if not callable(fn):
        raise ValueError(f"{name!r} in {path} is not callable")
    verl_params(fn)
    return fn


def verl_loss(fn, logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.28, clip_c=3.0):
    """policy_loss for a verl-style loss fn: the same arguments and the same (loss, metrics). fn gets what
    verl's actor passes: per-token advantages (B, T) (constant along a row, §1), the response mask,
    loss_agg_mode="token-mean" (§3), config with the clip settings and rollout_is_weights=None (no rollout
    correction: our sampler and trainer are the same model); its loss is its return value or the
    first element of it (verl returns (loss, metrics) or, before 0.6.1, a 4-tuple). ValueError, one line,
    where fn raises, returns no scalar, or returns a loss without a gradient."""
    A = advantages[:, None].expand_as(logp)
    given = {"old_log_prob": old_logp, "log_prob": logp, "advantages": A.contiguous(), "response_mask": mask,
             "loss_agg_mode": "token-mean", "rollout_is_weights": None,
             "config": VerlConfig(clip_ratio=eps_low, clip_ratio_low=eps_low, clip_ratio_high=eps_high,
                                  clip_ratio_c=clip_c)}
    all_true = torch.ones_like(mask, dtype=torch.bool)
    try:
        out = fn(**{name: given.get(name, all_true) for name in verl_params(fn)})
    except Exception as e:
        raise ValueError(f"it raised {one_line(e)}") from e
    loss = out[0] if isinstance(out, (tuple, list)) and out else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"it returned {what}, not a scalar loss")
    if logp.requires_grad and not loss.requires_grad:
        raise ValueError("its loss has no gradient with respect to log_prob")
    ratio = (logp - old_logp).clamp(-20.0, 20.0).exp()
    return loss.reshape(()), ratio_metrics(ratio.detach(), A, mask, eps_low, eps_high, clip_c)


# %% --- pretraining: the supervised stage that makes a stochastic, partly-right start policy -------
def task_problems(cfg: Config, split: str) -> list[rewards.Problem]:
    """The RL prompt pool (split "train") or the fixed held-out evaluation set ("test"); pretraining
    draws its own fresh problems (teacher_batch)."""
    kw = dict(task=cfg.task, digits=cfg.digits, operands=cfg.operands, ops=cfg.ops)
    easy = (cfg.easy_share if split == "train" else cfg.eval_easy_share) if cfg.task == "carry" else None
    if split == "train":
        return rewards.make_problems(cfg.train_problems, cfg.pretrain_seed, "train", easy_share=easy, **kw)
    return rewards.make_problems(cfg.eval_problems, 0, "test", easy_share=easy, **kw)


def prompt_ids(problem: rewards.Problem) -> list[int]:
    return [BOS] + encode(problem.prompt)


def max_new_tokens(cfg: Config) -> int:
    """Room for the longest possible answer of the task, plus the end token and 2 spare tokens.
    |value| is at most the expression with every '-' read as '+' and every operand at its maximum."""
    if cfg.task == "split":
        return cfg.operands * (cfg.digits + 1) - 1 + 3
    if cfg.task == "carry":  # marker + the digits of the largest sum
        return 1 + len(str(cfg.operands * (10 ** cfg.digits - 1))) + 3
    top = 10 ** cfg.digits - 1
    seqs = itertools.product(cfg.ops.replace("-", "+") or "+", repeat=cfg.operands - 1)
    longest = max(len(str(rewards.evaluate([top] * cfg.operands, "".join(s)))) for s in seqs) + ("-" in cfg.ops)
    return longest + 3


def block_size(cfg: Config) -> int:
    return 1 + cfg.operands * (cfg.digits + 1) + max_new_tokens(cfg)


def model_config(cfg: Config) -> GPTConfig:
    return GPTConfig(vocab_size=VOCAB_SIZE, block_size=block_size(cfg), n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd)


PRETRAIN_FIELDS = ("task", "digits", "operands", "ops", "n_layer", "n_head", "n_embd", "teacher_noise",
                   "careful_share", "careful_noise", "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_seed")


def pretrain_key(cfg: Config) -> dict:
    """Everything that shapes the pretrained checkpoint: its settings and the code that makes it."""
    code = "".join(Path(__file__).with_name(f).read_text() for f in ("model.py", "rewards.py"))
    code += "".join(inspect.getsource(f) for f in (pretrain, teacher_answer, teacher_batch, prompt_ids)) + VOCAB
    return {"settings": {f: getattr(cfg, f) for f in PRETRAIN_FIELDS},
            "model": dataclasses.asdict(model_config(cfg)),
            "code_sha256": hashlib.sha256(code.encode()).hexdigest()}


def teacher_answer(problem: rewards.Problem, rng: random.Random, cfg: Config) -> str:
    """The imperfect teacher: a correct answer, corrupted (one digit changed) with some probability. On
    the carry task it first picks a strategy: careful (c, right everywhere) with probability
    --careful-share, else the shortcut (n, right only without carries), each with its own noise."""
    answer, noise = problem.random_answer(rng), cfg.teacher_noise
    if isinstance(problem, rewards.CarryProblem) and rng.random() >= cfg.careful_share:
        answer = problem.shortcut
    elif isinstance(problem, rewards.CarryProblem):
        noise = cfg.careful_noise
    return rewards.corrupt(answer, rng) if rng.random() < noise else answer


def teacher_batch(cfg: Config, batch: int, rng: random.Random, device):
    """A supervised batch of fresh training-split problems (never a held-out prompt): BOS prompt
    answer EOS. Returns inputs (b, L), targets (b, L) with -100 where no loss applies (prompt, padding)."""
    seqs, starts = [], []
    while len(seqs) < batch:
        pr = rewards.random_problem(rng, cfg.task, cfg.digits, cfg.operands, cfg.ops)
        if rewards.split_of(pr.prompt) != "train":
            continue
        p = prompt_ids(pr)
        seqs.append(p + encode(teacher_answer(pr, rng, cfg)) + [EOS])
        starts.append(len(p))
    L = max(map(len, seqs))
    x = torch.tensor([s + [PAD] * (L - len(s)) for s in seqs])  # (b, L), right-padded
    pos = torch.arange(1, L)  # position of each target token
    starts, ends = torch.tensor(starts)[:, None], torch.tensor([len(s) for s in seqs])[:, None]
    # only the completion (answer and EOS) is learned: no loss on the prompt or the padding
    y = x[:, 1:].masked_fill((pos < starts) | (pos >= ends), -100)
    return x[:, :-1].to(device), y.to(device)


def pretrain(cfg: Config, device, log=print) -> GPT:
    """Supervised training on the teacher's answers, fresh problems every step, warm-up then cosine
    decay, long enough to converge: the start policy then reproduces the teacher's mixture (§10), so
    its pass@k and entropy are set by the teacher, not by where training happened to stop."""
    torch.manual_seed(cfg.pretrain_seed)
    rng = random.Random(cfg.pretrain_seed)
    model = GPT(model_config(cfg)).to(device)
    log(f"pretraining a {model.num_params():,}-parameter GPT for {cfg.pretrain_steps} steps "
        f"(teacher noise {cfg.teacher_noise})")
    # OneCycleLR also cycles Adam's beta1 between 0.85 and 0.95, so the 0.9 below is only its starting value
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt_, max_lr=cfg.pretrain_lr, total_steps=cfg.pretrain_steps,
                                                pct_start=0.05)
    for step in range(cfg.pretrain_steps):
        x, y = teacher_batch(cfg, cfg.pretrain_batch, rng, device)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        opt_.step()
        sched.step()
        if step % 200 == 0 or step == cfg.pretrain_steps - 1:
            log(f"  pretrain step {step:4d}  loss {loss.item():.3f}")
    return model


def load_or_pretrain(cfg: Config, device, log=print) -> tuple[GPT, Path, float]:
    """The pretrained model, from <out_dir>/pretrained-<hash>.pt if a checkpoint with exactly these
    settings exists, else trained now and cached. Returns (model, path, seconds spent training)."""
    key = pretrain_key(cfg)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.ckpt_dir or cfg.out_dir) / f"pretrained-{digest}.pt"
    if path.exists():
        model = GPT(model_config(cfg)).to(device)
        try:
            ckpt = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(ckpt, dict) or ckpt.get("key") != key:
                raise ValueError("its key does not match these settings")
            model.load_state_dict(ckpt["model"])
        except Exception as e:  # unpickling errors, missing or mis-shaped tensors, foreign files
            raise RuntimeError(f"{path}: corrupt or foreign checkpoint ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''}); delete it to rebuild") from None
        log(f"loaded pretrained checkpoint {path}")
        return model, path, 0.0
    t0 = time.time()
    model = pretrain(cfg, device, log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # then renamed: a parallel run never reads half a file
    torch.save({"key": key, "model": model.state_dict()}, tmp)
    os.replace(tmp, path)
    log(f"saved pretrained checkpoint {path}")
    return model, path, time.time() - t0


def mean(xs):
    """Mean of a list, None for an empty one (JSON has no NaN)."""
    return sum(xs) / len(xs) if xs else None


# %% --- evaluation: pass@1, pass@k, entropy and dead groups on held-out problems -------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021): 1 - C(n-c,k)/C(n,k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def rollout_and_score(model, problems, n, cfg: Config, generator):
    """n completions per problem; rewards (len(problems), n), the Rollout, and the decoded texts."""
    prompts = [prompt_ids(p) for p in problems for _ in range(n)]
    roll = sample(model, prompts, max_new_tokens(cfg), cfg.temperature, generator)
    texts = [completion_text(row) for row in roll.tokens.tolist()]
    r = [rewards.score(problems[i // n], t) for i, t in enumerate(texts)]
    return torch.tensor(r, device=roll.mask.device).view(len(problems), n), roll, texts


def group_stats(rewards_: torch.Tensor, roll: Rollout, texts: list[str], n: int) -> dict:
    """Metrics of §7 that any batch of groups has: reward, entropy, dead groups, distinct completions,
    and on the carry task the share of completions that chose the careful strategy."""
    groups = [texts[i:i + n] for i in range(0, len(texts), n)]
    return {"reward": rewards_.mean().item(),
            "entropy": ((roll.entropy * roll.mask).sum() / roll.mask.sum()).item(),
            "dead_groups": (rewards_.std(dim=1) == 0).float().mean().item(),
            "distinct": sum(len(set(g)) for g in groups) / len(groups),
            "careful": sum(t.startswith(rewards.CAREFUL) for t in texts) / len(texts)}


def bootstrap_means(values, draws: int, seed: int = 0) -> np.ndarray:
    """Means of `draws` resamples (with replacement) of `values`: the bootstrap distribution of the mean."""
    x = np.asarray(values, dtype=float)
    return x[np.random.default_rng(seed).integers(0, len(x), size=(draws, len(x)))].mean(axis=1)


def bootstrap_se(values: list[float], seed: int = 0, draws: int = 1000) -> float:
    """Standard error of the mean of per-problem values, by resampling the problems (bootstrap)."""
    return float(bootstrap_means(values, draws, seed).std())


@torch.no_grad()
def evaluate(model, problems, cfg: Config, seed: int, show: int = 0) -> dict:
    """Held-out metrics with a fixed sampling seed, so two methods are compared on equal draws: pass@1
    and pass@k (unbiased, with bootstrap standard errors over problems), distinct correct answers among
    the first k samples (answer-level diversity, §7), and on the carry task the same on hard problems
    (those with a carry, where only the careful strategy is right) with the careful share there."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    n, k = cfg.eval_samples, cfg.k
    r, roll, texts = rollout_and_score(model, problems, n, cfg, gen)
    m = {f"eval_{key}": v for key, v in group_stats(r, roll, texts, n).items()}
    correct = r.sum(dim=1).long().tolist()
    per = {"pass@1": [pass_at_k(n, c, 1) for c in correct], f"pass@{k}": [pass_at_k(n, c, k) for c in correct]}
    outs = [texts[i * n:(i + 1) * n] for i in range(len(problems))]
    per["distinct_correct"] = [len({t for t, x in zip(o[:k], r[i, :k].tolist()) if x}) for i, o in enumerate(outs)]
    hard = [i for i, p in enumerate(problems) if not getattr(p, "easy", True)]
    if hard:
        per["careful_hard"] = [sum(t.startswith(rewards.CAREFUL) for t in outs[i]) / n for i in hard]
    for key, vals in per.items():
        m[f"eval_{key}"] = mean(vals)
        if hard and key != "careful_hard":
            m[f"eval_hard_{key}"] = mean([vals[i] for i in hard])
    for key in ("pass@1", f"pass@{k}"):
        m[f"eval_{key}_se"] = bootstrap_se(per[key], seed)
    m["samples"] = [(problems[i], outs[i][:8]) for i in range(show)]
    return m


def headline(m: dict, k: int, n_problems: int) -> dict:
    """The held-out numbers summary.json keeps for the start and the end of each run (pass@k as "pass@k")."""
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
class NonFiniteLoss(RuntimeError):
    pass


def rl_step(model, opt_, batch_problems, cfg: Config, method: str, gen: torch.Generator) -> tuple[dict, dict]:
    """One rollout batch and mu = minibatches x epochs optimizer steps on it. Returns (metrics, timings).

    Why mu > 1 matters: the first minibatch is on-policy (r = 1, every method gives the same
    gradient, §2); only from the second update on does pi_theta differ from pi_old, r moves, and the
    methods' weights w(r) differ (§3-§5). mu is how far off-policy each batch is trained.
    """
    t0 = time.time()
    model.eval()
    r, roll, texts = rollout_and_score(model, batch_problems, cfg.group, cfg, gen)
    adv = group_advantages(r, cfg.adv_std).flatten()  # (B,)
    B = adv.numel()
    with torch.no_grad():
        # old_logp: the same model state, precision (fp32) and temperature that sampled, through the
        # training path. The sampler's own log-probs agree to ~1e-5 (cached vs uncached kernels sum in
        # a different order); recomputing makes the first minibatch's ratio 1 up to rounding, as in verl.
        old_logp = token_logps(model, roll, torch.arange(B, device=adv.device), cfg.temperature)
    t1 = time.time()
    metrics = group_stats(r, roll, texts, cfg.group)
    metrics["sampler_mismatch"] = ((old_logp - roll.logp).abs() * roll.mask).max().item()
    metrics.update(logp_adv_covariance(old_logp, adv, roll.mask))
    sums, last = {}, {}
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(B, generator=gen, device=gen.device).to(adv.device)
        for i, rows in enumerate(perm.tensor_split(cfg.minibatches)):  # exactly `minibatches` pieces
            logp = token_logps(model, roll, rows, cfg.temperature)
            mask = roll.mask[rows]
            if epoch == 0 and i == 0:
                # no update has happened yet, so pi_theta == pi_old and every ratio is 1 up to rounding (§2)
                drift = ((logp - old_logp[rows]).abs() * mask).max().item()
                assert drift < 1e-5, f"first minibatch is not on-policy: max |log r| = {drift:.2e}"
            loss, m = policy_loss(method, logp, old_logp[rows], adv[rows], mask, cfg.eps_low, cfg.eps_high, cfg.clip_c)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({loss.item()}) at minibatch {i} of epoch {epoch}")
            opt_.zero_grad(set_to_none=True)
            loss.backward()
            m["grad_norm"] = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            opt_.step()
            for k_, v in m.items():
                sums.setdefault(k_, []).append(v)
            last = m
    metrics.update({k_: sum(v) / len(v) for k_, v in sums.items()})  # mean over the mu updates
    metrics.update({f"last_{k_}": last[k_] for k_ in ("abs_log_ratio", "below1_pos", "clip_dual_pos") if k_ in last})
    return metrics, {"rollout_s": t1 - t0, "update_s": time.time() - t1}


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
        marks = " ".join(f"{o or '∅'}{'✓' if rewards.score(problem, o) else '✗'}" for o in outs)
        print(f"      {method:4s} {problem.prompt}{problem.answer:<8s} -> {marks}")


def train_rl(base_state, cfg: Config, method: str, seed: int, device, train_pool, test_set, start: dict,
             log_file) -> dict:
    """One RL run from the pretrained state. Returns its summary entry (and writes metrics lines)."""
    model = GPT(model_config(cfg)).to(device)
    model.load_state_dict(base_state)
    opt_ = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    prompt_rng = random.Random(seed)  # same prompt stream for every method of this seed: paired runs
    gen = torch.Generator(device=device)
    timings = {"rollout_s": 0.0, "update_s": 0.0, "eval_s": 0.0}
    run = {"method": method, "seed": seed, "initial": start, "final": None}
    for step in range(1, cfg.steps + 1):
        gen.manual_seed(1_000_003 * seed + step)  # same sampling stream for every method
        batch = prompt_rng.sample(train_pool, cfg.prompts)
        try:
            m, t = rl_step(model, opt_, batch, cfg, method, gen)
        except NonFiniteLoss as e:
            run["error"] = f"{method} seed {seed}: {e} at step {step}; metrics so far are in {log_file.name}"
            print(f"error: {run['error']}", file=sys.stderr)
            break
        for k_, v in t.items():
            timings[k_] += v
        if step % cfg.eval_every == 0 or step == cfg.steps:
            t0 = time.time()
            problems = test_set if step == cfg.steps else test_set[:cfg.curve_problems]
            ev = evaluate(model, problems, cfg, seed=seed * 7919 + 1, show=0 if cfg.quiet else 3)
            timings["eval_s"] += time.time() - t0
            m.update(ev, eval_problems=len(problems))
            if step == cfg.steps:
                run["final"] = headline(ev, cfg.k, len(problems))
        if step % cfg.log_every == 0 or step == cfg.steps or "samples" in m:
            samples = m.pop("samples", [])
            print(console_line(method, seed, step, m, cfg.k))
            show_samples(method, samples)
            log_file.write(json.dumps({"method": method, "seed": seed, "step": step, **m}) + "\n")
            log_file.flush()
    run["timings"] = timings
    return run


# %% --- the comparison: paired differences over seeds (§10) -------------------------------------------
COMPARED = ("entropy", "pass@1", "pass@k", "distinct_correct", "hard_pass@1", "hard_pass@k", "careful_hard")


def paired_comparison(runs: list[dict], baseline: str = "grpo") -> list[dict]:
    """For every method run beside `baseline`: the final held-out metrics' differences method - baseline,
    paired by seed (same checkpoint, prompts and evaluation draws), their mean, a 95% bootstrap
    percentile interval over seeds (None with one seed) and wins = seeds with a difference > 0."""
    by = {(r["method"], r["seed"]): r["final"] for r in runs if r["final"]}
    out = []
    for method in dict.fromkeys(r["method"] for r in runs):
        seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
        if method == baseline or not seeds:
            continue
        for metric in COMPARED:
            if metric not in by[method, seeds[0]]:
                continue
            diffs = np.array([by[method, s][metric] - by[baseline, s][metric] for s in seeds])
            out.append({"method": method, "baseline": baseline, "metric": metric, "seeds": seeds,
                        "diffs": diffs.tolist(), "mean": float(diffs.mean()), "ci95": bootstrap_ci(diffs),
                        "wins": int((diffs > 0).sum())})
    return out


def bootstrap_ci(diffs, draws: int = 10_000) -> list[float] | None:
    """95% bootstrap percentile interval of the mean of per-seed differences (None below two seeds)."""
    if len(diffs) < 2:
        return None
    boot = bootstrap_means(diffs, draws)
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def start_line(start: dict, k: int) -> str:
    return (f"start (held-out, {start['n_problems']} problems): pass@1 {start['pass@1']:.3f} +- {start['pass@1_se']:.3f}  "
            f"pass@{k} {start['pass@k']:.3f} +- {start['pass@k_se']:.3f}  entropy {start['entropy']:.3f}")


def print_table(start: dict, runs: list[dict], comparison: list[dict], k: int):
    """Start and end per method (mean over seeds), then each method's paired differences against grpo."""
    print("\n" + start_line(start, k))
    if not runs:
        return
    keys = [key for key in ("entropy", "pass@1", "pass@k", "hard_pass@k", "careful_hard") if key in start]
    print(f"{'method':12s} {'seeds':>5s} | " + " | ".join(f"{key.replace('pass@k', f'pass@{k}'):>13s}" for key in keys))
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method and r["final"]]
        if rs:
            print(f"{method[:12]:12s} {len(rs):5d} | " + " | ".join(f"{mean([r['final'][key] for r in rs]):13.3f}" for key in keys))
    if comparison:
        print("paired differences, method - grpo (final held-out metrics; mean, 95% bootstrap interval over seeds, wins):")
    for c in comparison:
        ci = f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if c["ci95"] else "(one seed: no interval; use --seeds 0,1,...,7)"
        print(f"  {c['method'][:12]:12s} {c['metric'].replace('pass@k', f'pass@{k}'):>16s} {c['mean']:+.3f} {ci}  "
              f"wins {c['wins']}/{len(c['seeds'])}")


def main(argv=None) -> int:
    try:
        cfg = parse_config(argv)
        device = pick_device(cfg.device)
    except ValueError as e:
        print(f"nano_aspo.py: error: {e}", file=sys.stderr)
        return 2
    t_start = time.time()
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"nano_aspo.py: error: --out-dir {cfg.out_dir}: {e.strerror}", file=sys.stderr)
        return 2
    problems = {}
    for split, flag in (("train", "train-problems"), ("test", "eval-problems")):
        try:
            problems[split] = task_problems(cfg, split)
        except ValueError as e:  # a problem space too small for the requested count
            print(f"nano_aspo.py: error: --{flag} too large for this task: {e}", file=sys.stderr)
            return 2
    train_pool, test_set = problems["train"], problems["test"]
    try:
        model, ckpt, pretrain_s = load_or_pretrain(cfg, device)
    except RuntimeError as e:  # a corrupt or foreign checkpoint
        print(f"nano_aspo.py: error: {e}", file=sys.stderr)
        return 1
    print(f"device {device}, model {model.num_params():,} parameters, mu = {cfg.mu} updates per rollout batch")
    t0 = time.time()
    # the start: every run of every seed begins here, so its held-out numbers are measured once
    initial = evaluate(model, test_set, cfg, seed=1, show=0 if cfg.quiet else 3)
    init_s = time.time() - t0
    start = headline(initial, cfg.k, len(test_set))
    print(start_line(start, cfg.k))
    show_samples("init", initial.pop("samples"))
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    runs, status = [], 0
    with open(out / "metrics.jsonl", "w") as log_file:
        try:
            for seed in cfg.seed_list if cfg.steps > 0 else []:
                for method in cfg.method_list:
                    log_file.write(json.dumps({"method": method, "seed": seed, "step": 0, **initial,
                                               "eval_problems": len(test_set)}) + "\n")
                    run = train_rl(base_state, cfg, method, seed, device, train_pool, test_set, start, log_file)
                    run["timings"]["initial_eval_s"] = init_s
                    runs.append(run)
                    status |= "error" in run
        except KeyboardInterrupt:
            print(f"\ninterrupted: metrics so far are in {out / 'metrics.jsonl'}", file=sys.stderr)
            status = 130
    comparison = paired_comparison(runs)
    summary = {"config": dataclasses.asdict(cfg), "wall_time_s": time.time() - t_start, "pretrain_s": pretrain_s,
               "checkpoint": str(ckpt), "start": start, "runs": runs, "comparison": comparison}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(start, runs, comparison, cfg.k)
    print(f"wall time {time.time() - t_start:.1f}s; wrote {out / 'metrics.jsonl'} and {out / 'summary.json'}")
    return status


if __name__ == "__main__":
    if "ipykernel" in sys.modules:  # stepping through the # %% cells in Jupyter or VS Code: no CLI, no exit
        main([])
    else:
        sys.exit(main())

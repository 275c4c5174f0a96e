"""S independent GPTs trained side by side as one batched model: the member dimension.

Why it exists: a run trains every (method, seed) pair from the same checkpoint, and the tiny GPT on
a (32 sequences, ~15 tokens) minibatch is far too small to keep a GPU, or two CPU threads, busy: its
step is hundreds of small ops, each paying launch, dispatch and thread start-up costs. Stacking S
members' weights along a new leading dimension makes every op S times larger and leaves their number
as it is: S small matmuls become one batched matmul (torch.bmm), S AdamW steps one. What it cannot
remove is the arithmetic itself, so on one CPU thread, where a single model's matmuls already run
near the core's peak, the gain is small (bench.py --members measures both).

It lives only here. model.py stays the single-model tutorial; StackedGPT reuses its Block, attention
and MLP code unchanged and only swaps the layers that hold weights (Linear, LayerNorm, Embedding)
for stacked ones. Those take the same (B, T, C) activations as before, with B = S * b rows in
MEMBER-MAJOR order (rows [s*b:(s+1)*b] belong to member s), and view them as (S, b*T, C) for their
member's weights. Attention has no weights, so there the members are just more rows of the batch
(and of the KV cache). That is the whole contract: the single-policy sampler and log-prob code run
on a StackedGPT unchanged.

Members never mix: each has its own weights, so the gradient of a summed loss sum_s loss_s is each
member's own gradient; AdamW works per element, so one AdamW over the stacked parameters is S
independent AdamWs (the step count is shared, all members step together); the one per-member piece
an RL step needs beyond that is the gradient-norm clip (clip_grad_norm_ below).
"""
import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import GPT, GPTConfig


class StackedLinear(nn.Module):
    """S Linear layers: weight (S, out, in), bias (S, out); input (S*b, T, in) member-major."""

    def __init__(self, S: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(S, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(S, out_features)) if bias else None

    def forward(self, x):
        B, T, _ = x.shape
        S = self.weight.size(0)
        x = x.reshape(S, B // S * T, -1)  # (S, b*T, in): a view, rows are member-major
        w = self.weight.transpose(1, 2)  # (S, in, out), a strided view that bmm reads as is
        y = torch.bmm(x, w) if self.bias is None else torch.baddbmm(self.bias[:, None], x, w)
        return y.view(B, T, -1)


class StackedLayerNorm(nn.Module):
    """S LayerNorms: weight, bias (S, C). The normalisation has no weights and runs on all rows at
    once."""

    def __init__(self, S: int, C: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(S, C))
        self.bias = nn.Parameter(torch.empty(S, C))

    def forward(self, x):
        B, T, C = x.shape
        S = self.weight.size(0)
        x = F.layer_norm(x, (C,)).view(S, B // S * T, C)
        return torch.addcmul(self.bias[:, None], x, self.weight[:, None]).view(B, T, C)


class StackedEmbedding(nn.Module):
    """S embedding tables: weight (S, V, C). Member s's ids index rows s*V.. of the flattened
    (S*V, C) table."""

    def __init__(self, S: int, V: int, C: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(S, V, C))

    def forward(self, idx):
        B, T = idx.shape
        S, V, C = self.weight.shape
        offset = torch.arange(S, device=idx.device)[:, None] * V  # (S, 1)
        return F.embedding(idx.reshape(S, -1) + offset, self.weight.view(S * V, C)).view(B, T, C)


def _stack_layers(module: nn.Module, S: int):
    """Replace, in place, every Linear and LayerNorm below `module` by its S-member version."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, StackedLinear(S, child.in_features, child.out_features,
                                                child.bias is not None))
        elif isinstance(child, nn.LayerNorm):
            setattr(module, name, StackedLayerNorm(S, child.normalized_shape[0]))
        else:
            _stack_layers(child, S)


class StackedGPT(nn.Module):
    """S GPTs of one GPTConfig as one module. Parameter names are GPT's (wte.weight,
    blocks.0.attn.qkv.weight, ...) with a leading member dimension S (qkv weight (S, 3C, C)); wte
    and lm_head stay tied per member."""

    def __init__(self, config: GPTConfig, members: list):
        """members: S GPT modules or GPT state dicts, all of `config`."""
        super().__init__()
        states = [m.state_dict() if isinstance(m, nn.Module) else m for m in members]
        S = self.n_members = len(states)
        if S < 1:
            raise ValueError("StackedGPT needs at least one member")
        self.config = config
        # GPT's own module tree, built without memory or random init (meta device), then its
        # weighted layers swapped for stacked ones: the blocks' forward code is model.py's,
        # unchanged
        with torch.device("meta"):
            blocks = GPT(config).blocks
        _stack_layers(blocks, S)
        self.wte = StackedEmbedding(S, config.vocab_size, config.n_embd)
        self.wpe = StackedEmbedding(S, config.block_size, config.n_embd)
        # registered in GPT's order, so that parameters() lists them as GPT's do
        self.blocks = blocks
        self.ln_f = StackedLayerNorm(S, config.n_embd)
        self.lm_head = StackedLinear(S, config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying per member, as in GPT
        device = next(iter(states[0].values())).device
        self.to(device)
        for s, state in enumerate(states):
            self.load_member(s, state)

    def num_params(self) -> int:
        """All members' parameters (tied ones counted once, as GPT.num_params); per member:
        // n_members."""
        return sum(p.numel() for p in self.parameters())

    def member_state_dict(self, s: int) -> dict:
        """Member s as a GPT state dict (same keys, detached copies), e.g. for a checkpoint or an
        evaluation."""
        return {k: v[s].clone() for k, v in self.state_dict().items()}

    @torch.no_grad()
    def load_member(self, s: int, state: dict):
        """Overwrite member s's weights with a GPT state dict of the same config."""
        own = self.state_dict()
        if state.keys() != own.keys():
            raise ValueError(f"not a GPT state dict of this config: keys differ by "
                             f"{sorted(state.keys() ^ own.keys())}")
        for k, v in own.items():
            v[s].copy_(state[k])

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """idx (S*b, T) member-major token ids -> logits (S*b, T, vocab), as GPT.forward per member.
        With a cache (model.KVCache of batch S*b), idx holds only the new tokens.

        Only the row count can be checked: a caller that selects rows (a minibatch, a sampler's
        bucket of equal prompt lengths) must take the same number b from every member and keep them
        member-major."""
        B, T = idx.shape
        S = self.n_members
        if B % S:
            raise ValueError(f"{B} rows do not split into {S} members: rows must be S * b, "
                             "member-major")
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        # (S, 1, T, C): member s's positions, for each of its b rows
        pos = self.wpe.weight[:, None, start:start + T]
        x = (self.wte(idx).view(S, B // S, T, -1) + pos).view(B, T, -1)  # (S*b, T, C)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.pos += T
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Per member, torch.nn.utils.clip_grad_norm_ over that member's parameters: returns the
        (S,) total grad norms before clipping and scales member s's grads by
        min(1, max_norm / (norm_s + 1e-6))."""
        # the tied wte/lm_head once, as in GPT
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(self.n_members, device=self.wte.weight.device)
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # (n_params, S)
        total = norms.norm(dim=0)  # (S,)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))
        return total


def multinomial_per_member(probs: torch.Tensor, generators: list) -> torch.Tensor:
    """One token per row of probs (S*b, V), member-major, member s drawing from its own
    generators[s]: one torch.multinomial call per member slice, so a member's draws are exactly
    those of its single-model sampler with that generator, whatever the other members are (one
    generator for all rows would couple them)."""
    return torch.cat([torch.multinomial(p, 1, generator=g)
                      for p, g in zip(probs.chunk(len(generators)), generators)])


def config_params(config: GPTConfig) -> int:
    """One member's parameter count (tied embedding counted once)."""
    C, L = config.n_embd, config.n_layer
    return config.vocab_size * C + config.block_size * C + L * (12 * C * C + 13 * C) + 2 * C


def member_bytes(config: GPTConfig, rows: int, seq_len: int) -> int:
    """A rough upper estimate of one member's fp32 memory in a training step on `rows` sequences of
    `seq_len` tokens: weights, grads and the two AdamW moments (4 copies of the parameters), plus
    the activations autograd keeps for the backward (per token and layer about 20 C for the layers'
    inputs and outputs plus the attention's T scores per head; the logits and their log-softmax, 4 V
    per token)."""
    C, V, L, nh = config.n_embd, config.vocab_size, config.n_layer, config.n_head
    params = config_params(config)
    per_token = L * (20 * C + 2 * nh * seq_len) + 4 * V + 2 * C
    return 4 * (4 * params + rows * seq_len * per_token)


def max_members(config: GPTConfig, rows: int, seq_len: int, bytes_available: int) -> int:
    """How many members fit in `bytes_available` (member_bytes each); 0 if not even one does."""
    return bytes_available // member_bytes(config, rows, seq_len)


# --- member plumbing: what a training loop over a batched model needs besides the model -----------
def member(x, s: int, S: int):
    """Member s's rows of a member-major tensor, or of every tensor field of a dataclass (a
    Rollout): the s-th of S equal parts along the first dimension."""
    if dataclasses.is_dataclass(x):
        return type(x)(*(member(getattr(x, f.name), s, S) for f in dataclasses.fields(x)))
    return x if S == 1 else x.chunk(S)[s]


def take(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """x (S, B, ...) -> (S, b, ...): member s's rows cols[s] (cols (S, b)), e.g. one minibatch."""
    return x.gather(1, cols.view(*cols.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))


def zero_failed_grads(model: nn.Module, failed: torch.Tensor):
    """A member whose loss turned non-finite learns nothing more: its gradients (maybe nan)
    are 0."""
    if failed.any():
        for p in model.parameters():
            p.grad[failed] = 0.0


EVAL_ROWS = 65_536  # sampled rows per evaluation batch: more members are evaluated in chunks


def chunks(model, seeds: list, rows_per_member: int):
    """(part, its seeds) for evaluating every member of `model` (a GPT is one member) at most
    EVAL_ROWS sampled rows at a time: the whole model if it fits, else StackedGPTs of a chunk of
    members each (copies of their weights), so memory stays bounded however many members."""
    chunk = max(1, EVAL_ROWS // rows_per_member)
    if not isinstance(model, StackedGPT) or model.n_members <= chunk:
        yield model, seeds
        return
    for first in range(0, model.n_members, chunk):
        members = range(first, min(first + chunk, model.n_members))
        part = StackedGPT(model.config, [model.member_state_dict(s) for s in members])
        yield part, seeds[first:first + chunk]


def free_memory(device) -> int:
    """Bytes free for the batched model: the GPU's free memory, or the machine's available
    memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):  # not Linux: no estimate, so no check
        return 2 ** 62


def check_fit(config: GPTConfig, members: int, rows: int, seq_len: int, device, snapshots: int = 0):
    """ValueError naming the flag to lower when `members` members (member_bytes each) and their
    `snapshots` past weights each (stale rollouts: --rollout-lag) do not fit in free memory."""
    train, past = member_bytes(config, rows, seq_len), snapshots * 4 * config_params(config)
    have = free_memory(device)
    if members * train > have:
        raise ValueError(f"--max-members {members}: {members} members need about "
                         f"{members * train / 2**30:.1f} GiB, {have / 2**30:.1f} GiB are free; "
                         "lower --max-members (the runs then go in chunks)")
    if members * (train + past) > have:
        raise ValueError(f"--rollout-lag: {snapshots} past weights of {members} members need about "
                         f"{members * (train + past) / 2**30:.1f} GiB with training, "
                         f"{have / 2**30:.1f} GiB are free; lower the lag or --max-members")


# --- stale rollouts (ASPO.md §12): each member samples with its own past weights ----------------
def snapshot(model: nn.Module) -> dict:
    """A copy of the model's weights (all members), for a later stale sampler."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def load_stale(sampler: StackedGPT, history, lags: list[int]):
    """Member s of `sampler` <- member s of history[-1 - lags[s]], the weights lags[s] steps before
    the newest snapshot, or the oldest one held (the start, while fewer steps have passed)."""
    picks = [history[max(-1 - lag, -len(history))] for lag in lags]
    for key, value in sampler.state_dict().items():
        value.copy_(torch.stack([past[key][s] for s, past in enumerate(picks)]))

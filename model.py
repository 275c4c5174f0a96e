"""The tiny GPT: a nanoGPT-shaped decoder-only transformer with an optional KV cache.

The training path (`forward(idx)`) is the plain causal transformer. The KV cache is used only by the
sampler: `forward(idx, cache)` appends the new keys/values to `cache` and attends over everything
cached so far, so generating T tokens costs T small forward passes instead of T full ones.
At the end: saving and loading a checkpoint together with the key of the settings that made it.
"""
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 32
    block_size: int = 32  # longest prompt + completion the model will ever see
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64


class KVCache:
    """Per-layer key/value buffers of shape (B, n_head, block_size, head_dim), filled left to
    right."""

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype=torch.float32):
        shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = 0  # number of positions already cached

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, T, hd) at the next positions; return all cached keys and values so
        far."""
        start, end = self.pos, self.pos + k.size(2)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.layer = layer
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, nh, T, hd)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is None or cache.pos == 0:
            # no past: the ordinary causal mask over the T new positions
            if cache is not None:
                cache.update(self.layer, k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # the new positions see every cached position and, among themselves, only the past;
            # a single new position sees everything, so it needs no mask (the common decode step)
            k, v = cache.update(self.layer, k, v)
            S = k.size(2)
            mask = (None if T == 1 else
                    torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2 and nanoGPT
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab). With a cache, idx holds only the new
        tokens."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size "
                             f"{self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.pos += T
        return self.lm_head(self.ln_f(x))


# --- checkpoints: a GPT's weights saved with the key of everything that made them -----------------
def save_checkpoint(path, model: GPT, key: dict):
    """Write {key, weights} to a temporary file, then rename it: a parallel run never reads half a
    file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"key": key, "model": model.state_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, config: GPTConfig, key: dict, device, matches=operator.eq,
                    remedy: str = "delete it to rebuild") -> GPT:
    """The GPT saved at `path` if it was saved with a key that `matches` (saved, key). RuntimeError
    (one line naming the file and the remedy) for anything else: unpickling errors, missing or
    mis-shaped tensors, a key that does not match, a foreign file."""
    model = GPT(config).to(device)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not matches(ckpt.get("key"), key):
            raise ValueError("its key does not match what this code computes")
        model.load_state_dict(ckpt["model"])
    except Exception as e:
        raise RuntimeError(f"{path}: corrupt, stale or foreign checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''}); {remedy}") from None
    return model

"""Sampling: G completions per prompt in one batch, with a KV cache (the inference engine).

sample() returns a Rollout: the sequences, the completion tokens and their mask, and the sampler's
own log-probs and entropies. nano_aspo.py does not train on those log-probs: it recomputes them
through the training path (token_logps), as verl does, so the first update's ratio is exactly 1.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import batched
from model import GPT, KVCache
from tokenizer import EOS, PAD

@dataclass
class Rollout:
    prompt_lens: torch.Tensor  # (B,) prompt length of each row, BOS included
    sequences: torch.Tensor    # (B, L) prompt + completion, right-padded with PAD
    tokens: torch.Tensor       # (B, T) completion tokens, PAD after the end token
    mask: torch.Tensor         # (B, T) 1.0 for valid completion tokens, up to and including EOS
    logp: torch.Tensor         # (B, T) fp32 log-prob of each sampled token under the sampler
    entropy: torch.Tensor      # (B, T) fp32 entropy of the sampling distribution at each step


def entropy_of(logp_all: torch.Tensor) -> torch.Tensor:
    """Entropy over the last (vocabulary) dimension of log-probabilities."""
    return -(logp_all.exp() * logp_all).sum(-1)


@torch.no_grad()
def sample(model: GPT, prompts: list[list[int]], max_new_tokens: int, temperature: float,
           generator, use_cache: bool = True) -> Rollout:
    """Sample one completion per prompt row (repeat a prompt G times for a group).

    Rows are bucketed by prompt length so that no prompt needs padding; each bucket is one batch
    that is prefilled once and then extended one token at a time through the KV cache (use_cache=
    False recomputes the whole sequence instead; bench.py compares). `generator` is one
    torch.Generator, or a list of them, one per member of a batched model (batched.py): each
    member's rows then draw from its own stream, exactly as they would alone."""
    gens = generator if isinstance(generator, list) else [generator]
    device = next(model.parameters()).device
    B = len(prompts)
    tokens = torch.full((B, max_new_tokens), PAD, dtype=torch.long, device=device)
    mask, logps, ents = (torch.zeros(B, max_new_tokens, device=device) for _ in range(3))
    lens = torch.tensor([len(p) for p in prompts], device=device)
    sequences = torch.full((B, int(lens.max()) + max_new_tokens), PAD, dtype=torch.long,
                           device=device)
    for length in sorted(set(lens.tolist())):
        rows = (lens == length).nonzero().squeeze(1)
        idx = prompt_idx = torch.tensor([prompts[i] for i in rows.tolist()], device=device)
        cache = KVCache(model.config, len(rows), device) if use_cache else None
        logits = model(idx, cache)[:, -1]
        alive = torch.ones(len(rows), dtype=torch.bool, device=device)
        for t in range(max_new_tokens):
            logp_all = F.log_softmax(logits.float() / temperature, dim=-1)  # (b, V)
            tok = batched.multinomial_per_member(logp_all.exp(), gens).squeeze(1)
            tokens[rows, t] = torch.where(alive, tok, PAD)
            mask[rows, t] = alive.float()
            logps[rows, t] = logp_all.gather(1, tok[:, None]).squeeze(1) * alive
            ents[rows, t] = entropy_of(logp_all) * alive
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

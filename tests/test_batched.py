import random

import pytest
import torch
import torch.nn.functional as F

import nano_aspo as na
import sampler
import tokenizer
import rewards
from batched import StackedGPT, max_members, member_bytes, multinomial_per_member
from model import GPT, GPTConfig, KVCache

CFG = GPTConfig(vocab_size=19, block_size=12, n_layer=2, n_head=2, n_embd=16)
S, b, T = 3, 2, 10


def _members(n=S, scale=2.0):
    models = []
    for s in range(n):
        torch.manual_seed(s)
        model = GPT(CFG)
        with torch.no_grad():  # logits of order 1 (as in test_model.py), so that a wrong weight shows
            for p in model.parameters():
                p.mul_(scale)
        models.append(model)
    return models


def _tokens(rows=S * b, length=T, seed=0):
    return torch.randint(0, CFG.vocab_size, (rows, length), generator=torch.Generator().manual_seed(seed))


def _rows(s):
    return slice(s * b, (s + 1) * b)  # member s's rows in the member-major batch


def _loss(logits, y, n):
    """Each member's mean cross-entropy (n,), and their sum: the summed loss that trains all members."""
    per = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(1)
    return per.sum()


def test_forward_matches_each_member():
    models = _members()
    stacked = StackedGPT(CFG, models)
    idx = _tokens()
    out = stacked(idx)
    assert out.shape == (S * b, T, CFG.vocab_size)
    for s, m in enumerate(models):
        torch.testing.assert_close(out[_rows(s)], m(idx[_rows(s)]), atol=1e-5, rtol=0)


def test_cached_decode_matches_each_member():
    models = _members()
    stacked = StackedGPT(CFG, models)
    seq = _tokens(length=CFG.block_size)
    with torch.no_grad():
        cache = KVCache(CFG, S * b, "cpu")
        outs = [stacked(seq[:, :4], cache)]
        for pos, chunk in ((4, 1), (5, 3), (8, 1), (9, 1), (10, 2)):
            outs.append(stacked(seq[:, pos:pos + chunk], cache))
        assert cache.pos == CFG.block_size
        out = torch.cat(outs, dim=1)
        with pytest.raises(ValueError, match="block_size"):
            stacked(seq[:, :1], cache)
        for s, m in enumerate(models):
            torch.testing.assert_close(out[_rows(s)], m(seq[_rows(s)]), atol=1e-5, rtol=0)


def test_rows_must_split_into_members():
    stacked = StackedGPT(CFG, _members())
    with pytest.raises(ValueError, match="member-major"):
        stacked(_tokens(rows=S * b + 1))
    with pytest.raises(ValueError, match="block_size"):
        stacked(_tokens(length=CFG.block_size + 1))


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_backward_and_clip_match_each_member():
    models = _members()
    stacked = StackedGPT(CFG, models)
    seq = _tokens(length=T + 1)
    x, y = seq[:, :-1], seq[:, 1:]
    _loss(stacked(x), y, S).backward()
    max_norm = 0.5
    norms = stacked.clip_grad_norm_(max_norm)
    for s, m in enumerate(models):
        _loss(m(x[_rows(s)]), y[_rows(s)], 1).backward()
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), max_norm)
        assert norm > max_norm  # the clip must act, or the test proves little
        torch.testing.assert_close(norms[s], norm, atol=1e-5, rtol=1e-5)
        for k, g in _grads(m).items():
            torch.testing.assert_close(dict(stacked.named_parameters())[k].grad[s], g, atol=1e-5, rtol=0)
    assert stacked.clip_grad_norm_(1e9).shape == (S,)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adamw_steps_match_each_member(weight_decay):
    models = _members()
    stacked = StackedGPT(CFG, models)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=weight_decay) for m in models]
    stacked_opt = torch.optim.AdamW(stacked.parameters(), lr=1e-2, weight_decay=weight_decay)
    for step in range(3):
        seq = _tokens(length=T + 1, seed=step)
        x, y = seq[:, :-1], seq[:, 1:]
        stacked_opt.zero_grad()
        _loss(stacked(x), y, S).backward()
        stacked.clip_grad_norm_(1.0)
        stacked_opt.step()
        for s, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad()
            _loss(m(x[_rows(s)]), y[_rows(s)], 1).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
    C = CFG.n_embd
    for s, m in enumerate(models):
        assert all(blk.attn.qkv.bias.grad[C:2 * C].abs().max() < 1e-6 for blk in m.blocks)
        for k, v in stacked.member_state_dict(s).items():
            if k.endswith("qkv.bias"):
                # the key bias shifts every score of a query alike, so softmax ignores it: its true gradient is 0,
                # the computed one rounding noise (~1e-9), which Adam's normalisation turns into +-lr steps
                v, ref = torch.cat([v[:C], v[2 * C:]]), torch.cat([m.state_dict()[k][:C], m.state_dict()[k][2 * C:]])
            else:
                ref = m.state_dict()[k]
            torch.testing.assert_close(v, ref, atol=1e-5, rtol=0)
    assert stacked.wte.weight is stacked.lm_head.weight  # still tied after the steps


def test_members_are_independent():
    models = _members()
    seq = _tokens(length=T + 1)
    x, y = seq[:, :-1], seq[:, 1:]
    a, c = StackedGPT(CFG, models), StackedGPT(CFG, [models[0], _members(scale=5.0)[1], models[2]])
    out_a, out_c = a(x), c(x)
    assert (out_a[_rows(1)] - out_c[_rows(1)]).abs().max() > 1e-2  # member 1 did change
    for out in (out_a, out_c):
        _loss(out, y, S).backward()
    torch.testing.assert_close(out_a[_rows(0)], out_c[_rows(0)], atol=0, rtol=0)
    for (k, p), q in zip(a.named_parameters(), c.parameters()):
        torch.testing.assert_close(p.grad[0], q.grad[0], atol=0, rtol=0, msg=k)


def test_member_state_dict_round_trip():
    models = _members()
    stacked = StackedGPT(CFG, [m.state_dict() for m in models])
    assert stacked.num_params() == S * models[0].num_params()
    for s, m in enumerate(models):
        state = stacked.member_state_dict(s)
        assert state.keys() == m.state_dict().keys()
        fresh = GPT(CFG)
        fresh.load_state_dict(state)
        for k, v in fresh.state_dict().items():
            torch.testing.assert_close(v, m.state_dict()[k], atol=0, rtol=0)
    stacked.load_member(2, models[0].state_dict())
    idx = _tokens()
    torch.testing.assert_close(stacked(idx)[_rows(2)], models[0](idx[_rows(2)]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="keys"):
        stacked.load_member(0, {"wte.weight": models[0].wte.weight})


def test_memory_estimate_bounds_what_autograd_keeps():
    rows, length = 8, CFG.block_size
    saved = {}

    def keep(t):  # by storage: q, k and v are views of one qkv output
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    stacked = StackedGPT(CFG, _members(1))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        F.cross_entropy(stacked(_tokens(rows, length)).flatten(0, 1), _tokens(rows, length).flatten())
    activations = member_bytes(CFG, rows, length) - member_bytes(CFG, 0, length)
    params = 4 * stacked.num_params()
    assert member_bytes(CFG, 0, length) == 4 * params  # weights, grads and AdamW's two moments
    # an upper bound, but not a loose one (the saved weights themselves are not activations)
    assert sum(saved.values()) - params <= activations <= 3 * sum(saved.values())
    per = member_bytes(CFG, rows, length)
    assert max_members(CFG, rows, length, 10 * per) == 10
    assert max_members(CFG, rows, length, per - 1) == 0


def test_multinomial_per_member_draws_each_members_own_stream():
    probs = torch.rand(S * b, CFG.vocab_size, generator=torch.Generator().manual_seed(0)).softmax(-1)
    tok = multinomial_per_member(probs, [torch.Generator().manual_seed(10 + s) for s in range(S)])
    assert tok.shape == (S * b, 1)
    for s in range(S):
        alone = torch.multinomial(probs[_rows(s)], 1, generator=torch.Generator().manual_seed(10 + s))
        torch.testing.assert_close(tok[_rows(s)], alone, atol=0, rtol=0)


def test_tutorial_sampler_and_log_probs_run_on_the_stacked_model():
    cfg = GPTConfig(vocab_size=tokenizer.VOCAB_SIZE, block_size=17, n_layer=1, n_head=2, n_embd=16)
    models = []
    for s in range(S):
        torch.manual_seed(s)
        models.append(GPT(cfg))
    stacked = StackedGPT(cfg, models)
    rng = random.Random(0)
    # carry prompts all have one length (zero-padded operands), so the sampler's one bucket stays member-major
    prompts = [na.prompt_ids(rewards.random_problem(rng)) for _ in range(S * b)]
    roll = sampler.sample(stacked, prompts, 8, 1.0, torch.Generator().manual_seed(0))
    rows = torch.arange(S * b)
    with torch.no_grad():
        logp = na.token_logps(stacked, roll, rows, 1.0)[0]
        torch.testing.assert_close(logp * roll.mask, roll.logp, atol=1e-5, rtol=0)
        for s, m in enumerate(models):
            alone = na.token_logps(m, roll, rows[_rows(s)], 1.0)[0]
            torch.testing.assert_close(logp[_rows(s)], alone, atol=1e-5, rtol=0)

import pytest
import torch
import torch.nn.functional as F

import nano_aspo as na
import sampler
import tokenizer
from model import GPT, GPTConfig


def _random_model(seed=0, block_size=20):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.VOCAB_SIZE, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # logits of order 1, so that they depend on the context
    return model


def _prompts(seed=0):
    """Prompts of four different lengths, each repeated, in mixed order (the sampler buckets them)."""
    g = torch.Generator().manual_seed(seed)
    base = [[tokenizer.BOS] + torch.randint(0, len(tokenizer.VOCAB), (n,), generator=g).tolist() for n in (2, 5, 3, 7)]
    return [base[i % 4] for i in (0, 1, 2, 3, 1, 0, 3, 2, 2, 1, 0, 3)]


def _sample(model, prompts, seed, T=8, temperature=1.0):
    return sampler.sample(model, prompts, T, temperature, torch.Generator().manual_seed(seed))


def test_same_seed_same_rollout_different_seed_differs():
    model, prompts = _random_model(), _prompts()
    a, b, c = _sample(model, prompts, 5), _sample(model, prompts, 5), _sample(model, prompts, 6)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.entropy, b.entropy) and torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.tokens, c.tokens)


def test_shapes_and_sequences_layout():
    model, prompts = _random_model(), _prompts()
    T = 8
    roll = _sample(model, prompts, 0, T)
    B = len(prompts)
    L = max(map(len, prompts)) + T
    assert roll.tokens.shape == roll.mask.shape == roll.logp.shape == roll.entropy.shape == (B, T)
    assert roll.sequences.shape == (B, L)
    assert roll.logp.dtype == torch.float32 and roll.entropy.dtype == torch.float32
    assert roll.prompt_lens.tolist() == [len(p) for p in prompts]
    for i, p in enumerate(prompts):
        assert roll.sequences[i, :len(p)].tolist() == p
        assert roll.sequences[i, len(p):len(p) + T].tolist() == roll.tokens[i].tolist()
        assert (roll.sequences[i, len(p) + T:] == tokenizer.PAD).all()


def _check_mask_layout(roll):
    for toks, mask, logp, ent in zip(roll.tokens.tolist(), roll.mask.tolist(), roll.logp, roll.entropy):
        if tokenizer.EOS in toks:
            e = toks.index(tokenizer.EOS)
            assert mask[:e + 1] == [1.0] * (e + 1) and mask[e + 1:] == [0.0] * (len(toks) - e - 1)
            assert toks[e + 1:] == [tokenizer.PAD] * (len(toks) - e - 1)
        else:
            assert mask == [1.0] * len(toks)
        m = torch.tensor(mask)
        assert (logp[m == 0] == 0).all() and (ent[m == 0] == 0).all()


def test_mask_layout_on_random_rollouts():
    model = _random_model(1)
    prompts = _prompts(1) * 4
    roll = _sample(model, prompts, 3, T=12, temperature=1.5)
    ended = sum(tokenizer.EOS in row for row in roll.tokens.tolist())
    assert 0 < ended < len(prompts)  # both kinds of rows were exercised
    _check_mask_layout(roll)


class CountdownGPT(GPT):
    """A GPT whose next token is forced: after digit d > 0 comes d - 1, after '0' (or anything else) EOS."""

    def forward(self, idx, cache=None):
        logits = super().forward(idx, cache)
        forced = torch.where((idx >= 1) & (idx <= 9), idx - 1, torch.full_like(idx, tokenizer.EOS))
        return logits + 1e4 * F.one_hot(forced, logits.size(-1)).float()


def test_mask_stops_at_first_eos_deterministic():
    torch.manual_seed(0)
    model = CountdownGPT(GPTConfig(vocab_size=tokenizer.VOCAB_SIZE, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    d = lambda s: tokenizer.encode(s)
    prompts = [[tokenizer.BOS] + d("3"), [tokenizer.BOS] + d("11"), [tokenizer.BOS] + d("0"), [tokenizer.BOS] + d("77"), [tokenizer.BOS] + d("2"),
               [tokenizer.BOS] + d("+=")]
    T = 6
    for seed in (0, 1):
        roll = _sample(model, prompts, seed, T)
        E, P = tokenizer.EOS, tokenizer.PAD
        assert roll.tokens.tolist() == [
            [2, 1, 0, E, P, P],
            [0, E, P, P, P, P],
            [E, P, P, P, P, P],
            [6, 5, 4, 3, 2, 1],  # never ends within T tokens: all valid
            [1, 0, E, P, P, P],
            [E, P, P, P, P, P],
        ]
        assert roll.mask.tolist() == [
            [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0]]
        _check_mask_layout(roll)
        assert [na.completion_text(r) for r in roll.tokens.tolist()] == ["210", "0", "", "654321", "10", ""]
        assert roll.logp.abs().max() < 1e-3  # forced tokens have probability ~1


def test_rollout_logp_equals_training_path_logp():
    model, prompts = _random_model(2), _prompts(2)
    for temperature in (1.0, 0.7, 1.6):
        roll = _sample(model, prompts, 11, T=9, temperature=temperature)
        rows = torch.arange(len(prompts))
        lp = na.token_logps(model, roll, rows, temperature)[0]
        valid = roll.mask > 0
        assert valid.sum() > 20
        torch.testing.assert_close(lp[valid], roll.logp[valid], atol=1e-5, rtol=0)
        # a subset of rows, out of order (as a minibatch is)
        sub = torch.tensor([7, 0, 3, 10])
        lp_sub = na.token_logps(model, roll, sub, temperature)[0]
        torch.testing.assert_close(lp_sub[valid[sub]], roll.logp[sub][valid[sub]], atol=1e-5, rtol=0)
        # the temperature really is applied: at another temperature the log-probs differ
        other = na.token_logps(model, roll, rows, temperature * 2)[0]
        assert (other[valid] - roll.logp[valid]).abs().max() > 1e-3


def test_entropy_nonnegative_and_matches_uncached_distribution():
    model, prompts = _random_model(3), _prompts(3)
    temperature = 0.8
    roll = _sample(model, prompts, 4, T=6, temperature=temperature)
    assert (roll.entropy >= 0).all()
    assert (roll.entropy <= torch.log(torch.tensor(float(tokenizer.VOCAB_SIZE))) + 1e-5).all()
    with torch.no_grad():
        for i, p in enumerate(prompts):
            n = int(roll.mask[i].sum())
            seq = roll.sequences[i:i + 1, :len(p) + n - 1]
            logp = F.log_softmax(model(seq)[0, len(p) - 1:].float() / temperature, dim=-1)
            ent = -(logp.exp() * logp).sum(-1)
            torch.testing.assert_close(roll.entropy[i, :n], ent, atol=1e-5, rtol=0)


def test_sample_rejects_prompt_plus_completion_beyond_block_size():
    model = _random_model(block_size=10)
    _sample(model, [[tokenizer.BOS, 1, 2, 3, 4, 5]] * 16, 0, T=5)  # 6 + 5 - 1 = 10 positions: fits
    with pytest.raises(ValueError):
        _sample(model, [[tokenizer.BOS, 1, 2, 3, 4, 5]] * 16, 0, T=6)  # 6 + 6 - 1 = 11 > 10 positions


@pytest.mark.parametrize("seed,temperature", [(0, 1.0), (7, 0.7), (13, 1.5)])
def test_uncached_sampling_equals_cached(seed, temperature):
    # use_cache=False recomputes every step from scratch (bench.py's baseline): same draws, same rollout
    model, prompts = _random_model(4), _prompts(seed)
    assert len({len(p) for p in prompts}) == 4  # prompts of different lengths: several buckets
    T = 9
    a = sampler.sample(model, prompts, T, temperature, torch.Generator().manual_seed(seed), use_cache=True)
    b = sampler.sample(model, prompts, T, temperature, torch.Generator().manual_seed(seed), use_cache=False)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.prompt_lens, b.prompt_lens)
    torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.entropy, b.entropy, atol=1e-5, rtol=0)
    assert a.mask.sum() > 40 and (a.mask == 0).any()  # long rows and rows that ended were both compared
    _check_mask_layout(b)


def test_uncached_sampling_respects_block_size():
    model = _random_model(block_size=10)
    sampler.sample(model, [[tokenizer.BOS, 1, 2, 3, 4, 5]] * 4, 5, 1.0, torch.Generator().manual_seed(0), use_cache=False)
    with pytest.raises(ValueError):
        sampler.sample(model, [[tokenizer.BOS, 1, 2, 3, 4, 5]] * 4, 6, 1.0, torch.Generator().manual_seed(0), use_cache=False)

import pytest
import torch

from model import GPT, GPTConfig, KVCache


def _model(seed=0, n_layer=2, block_size=16, vocab_size=19):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=32)
    model = GPT(cfg).eval()
    # scale the GPT-2 init up (x2: logits of order 1) so that a wrong mask or position shows in the logits
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model


@pytest.mark.parametrize("n_layer", [1, 2])
def test_cached_logits_match_uncached_at_every_position(n_layer):
    model = _model(n_layer=n_layer)
    B, S = 3, model.config.block_size
    gen = torch.Generator().manual_seed(1)
    seq = torch.randint(0, model.config.vocab_size, (B, S), generator=gen)
    with torch.no_grad():
        full = model(seq)  # (B, S, V)
        # the logits must depend on the context, or the comparison proves little
        assert (full[:, 1:] - full[:, :-1]).abs().max() > 1e-2

        cache = KVCache(model.config, B, seq.device)
        prefill = 5
        out = model(seq[:, :prefill], cache)
        assert cache.pos == prefill
        torch.testing.assert_close(out, full[:, :prefill], atol=1e-5, rtol=0)
        pos = prefill
        for chunk in (1, 1, 3, 1, 2, 1):  # single tokens, then chunks after the prefill
            out = model(seq[:, pos:pos + chunk], cache)
            torch.testing.assert_close(out, full[:, pos:pos + chunk], atol=1e-5, rtol=0)
            pos += chunk
            assert cache.pos == pos
        while pos < S:  # one token at a time to the end of the block
            out = model(seq[:, pos:pos + 1], cache)
            torch.testing.assert_close(out, full[:, pos:pos + 1], atol=1e-5, rtol=0)
            pos += 1
        assert cache.pos == S


def test_single_token_prefill_then_steps():
    model = _model(n_layer=1, block_size=8)
    seq = torch.randint(0, 19, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(seq)
        cache = KVCache(model.config, 2, seq.device)
        for t in range(8):
            torch.testing.assert_close(model(seq[:, t:t + 1], cache), full[:, t:t + 1], atol=1e-5, rtol=0)


def test_causal_future_tokens_do_not_change_past_logits():
    model = _model(n_layer=2)
    a = torch.randint(0, 19, (1, 12), generator=torch.Generator().manual_seed(4))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 19
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :8], lb[:, :8], atol=1e-6, rtol=0)
    assert (la[:, 8:] - lb[:, 8:]).abs().max() > 1e-3


def test_sequence_longer_than_block_size_raises():
    model = _model(n_layer=1, block_size=8)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 9, dtype=torch.long))
    model(torch.zeros(1, 8, dtype=torch.long))  # exactly block_size is fine
    cache = KVCache(model.config, 1, "cpu")
    model(torch.zeros(1, 6, dtype=torch.long), cache)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, dtype=torch.long), cache)  # 6 cached + 3 new > 8


def test_weight_tying_and_output_shape():
    model = _model(n_layer=1)
    assert model.wte.weight is model.lm_head.weight
    out = model(torch.zeros(2, 4, dtype=torch.long))
    assert out.shape == (2, 4, model.config.vocab_size)

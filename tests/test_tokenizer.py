import random

import pytest

import nano_aspo as na
import tokenizer


def test_every_vocab_character_is_one_token_and_round_trips():
    ids = set()
    for ch in tokenizer.VOCAB:
        toks = tokenizer.encode(ch)
        assert len(toks) == 1
        assert 0 <= toks[0] < len(tokenizer.VOCAB)
        assert tokenizer.decode(toks) == ch
        ids.add(toks[0])
    assert len(ids) == len(tokenizer.VOCAB)  # distinct ids
    assert {tokenizer.BOS, tokenizer.EOS, tokenizer.PAD}.isdisjoint(ids)
    assert tokenizer.VOCAB_SIZE == len(tokenizer.VOCAB) + 3


def test_random_strings_round_trip_one_token_per_character():
    rng = random.Random(0)
    for _ in range(300):
        s = "".join(rng.choice(tokenizer.VOCAB) for _ in range(rng.randrange(0, 40)))
        ids = tokenizer.encode(s)
        assert len(ids) == len(s)
        assert tokenizer.decode(ids) == s
    assert tokenizer.encode("") == []
    assert tokenizer.decode([]) == ""


def test_special_tokens_decode_to_their_names():
    assert tokenizer.decode([tokenizer.BOS, tokenizer.EOS, tokenizer.PAD]) == "<|bos|>" + "<|eos|>" + "<|pad|>"


@pytest.mark.parametrize("text,pos,ch", [("123a", 3, "a"), ("é", 0, "é"), ("1+\t2", 2, "\t"),
                                         ("12😀", 2, "😀"), ("99=\r", 3, "\r"), ("<|eos|>", 0, "<")])
def test_encode_rejects_characters_outside_the_vocab(text, pos, ch):
    with pytest.raises(ValueError) as e:
        tokenizer.encode(text)
    msg = str(e.value)
    assert repr(ch) in msg
    assert f"position {pos}" in msg


def test_encode_rejects_non_strings():
    for bad in (None, b"12", 12, ["1"]):
        with pytest.raises(ValueError):
            tokenizer.encode(bad)


@pytest.mark.parametrize("ids", [[tokenizer.VOCAB_SIZE], [0, 1, 99], [-1], [1, 2, 10**6], [None], [1.7], ["3"], [float("nan")]])
def test_decode_rejects_ids_outside_the_vocab(ids):
    with pytest.raises(ValueError):
        tokenizer.decode(ids)


def test_completion_text_stops_at_first_eos():
    ids = tokenizer.encode("12") + [tokenizer.EOS] + tokenizer.encode("34") + [tokenizer.EOS, tokenizer.PAD]
    assert na.completion_text(ids) == "12"
    assert na.completion_text([tokenizer.EOS] + tokenizer.encode("5")) == ""
    assert na.completion_text(tokenizer.encode("-7 ")) == "-7 "  # no end token: everything
    assert na.completion_text(tokenizer.encode("-7") + [tokenizer.EOS, tokenizer.EOS]) == "-7"

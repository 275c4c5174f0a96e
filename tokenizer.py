"""Tokens: a tiktoken Encoding built from an in-code vocabulary (nothing is downloaded).

One token per character of the task's text (digits, operators, '=', the strategy markers c and n)
plus three special tokens. encode and decode refuse what they cannot represent with a one-line
ValueError instead of tiktoken's panic; completion_text is what the verifier (rewards.py) sees.
"""
import operator

import tiktoken

from rewards import Problem

VOCAB = "0123456789+-*= \ncn"  # one token per character; c and n are the strategy markers
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


def prompt_ids(problem: Problem) -> list[int]:
    return [BOS] + encode(problem.prompt)

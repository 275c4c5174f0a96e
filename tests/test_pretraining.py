"""Pretraining: the imperfect teacher (its batches, strategy mixture and noise), one supervised step, and a
deterministic pretrained start."""
import random

import torch

import nano_aspo as na
import tokenizer
from model import GPT
import pretrain
import rewards
from test_checkpoint import CPU, _cfg, _quiet, _same_weights


def test_pretraining_is_deterministic(tmp_path):
    a, _, _ = pretrain.load_start(_cfg(tmp_path / "a"), CPU, log=_quiet)
    b, _, _ = pretrain.load_start(_cfg(tmp_path / "b"), CPU, log=_quiet)
    assert _same_weights(a, b)


def _written(x, y):
    """(prompt, completion the teacher wrote) per row: the prompt from the inputs, the completion decoded
    from the targets that are not -100, which end with exactly one EOS; every target is the next input."""
    rows = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        assert xi[0] == tokenizer.BOS
        text = tokenizer.decode([t for t in xi if t != tokenizer.PAD])
        targets = [t for t in yi if t != -100]
        assert targets[-1] == tokenizer.EOS and targets.count(tokenizer.EOS) == 1
        for j, t in enumerate(yi[:-1]):  # the shift is right
            if t != -100:
                assert xi[j + 1] == t
        rows.append((text[len("<|bos|>"):text.index("=") + 1], tokenizer.decode(targets[:-1])))
    return rows


def _carry(prompt):
    return rewards.carry_problem([int(v) for v in prompt[:-1].split("+")], 3)


def test_teacher_batch_fresh_training_problems_and_the_strategy_mixture(tmp_path):
    rows = _written(*pretrain.teacher_batch(_cfg(tmp_path, careful_share=0.3, shortcut_noise=0.0, careful_noise=0.0),
                                      400, random.Random(0), CPU))
    assert len({pr for pr, _ in rows}) > 390  # fresh problems, not a small pool
    assert all(rewards.split_of(pr) == "train" for pr, _ in rows)  # never a held-out prompt
    careful = [w == _carry(pr).answer for pr, w in rows]
    assert all(c or w == _carry(pr).shortcut for (pr, w), c in zip(rows, careful))  # one of the two strategies
    assert 0.24 < sum(careful) / len(rows) < 0.36
    # the shortcut is right exactly on easy problems, the careful answer everywhere
    assert all(rewards.score(_carry(pr), w) == float(c or _carry(pr).easy) for (pr, w), c in zip(rows, careful))


def test_shortcut_noise_per_strategy(tmp_path):
    # careful answers always corrupted, shortcut answers never: exactly the careful rows are wrong strings
    cfg = _cfg(tmp_path, careful_share=0.5, shortcut_noise=0.0, careful_noise=0.999999)
    rows = _written(*pretrain.teacher_batch(cfg, 200, random.Random(1), CPU))
    shortcut = [w == _carry(pr).shortcut for pr, w in rows]
    assert 60 < sum(shortcut) < 140
    for (pr, w), s in zip(rows, shortcut):
        if not s:  # a careful answer with one digit changed: same length, still marked c, wrong
            assert w[0] == "c" and len(w) == len(_carry(pr).answer) and rewards.score(_carry(pr), w) == 0.0


def test_supervised_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    cfg = _cfg(tmp_path)
    torch.manual_seed(0)
    model = GPT(na.model_config(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = pretrain.teacher_batch(cfg, 16, random.Random(0), CPU)
    losses = [pretrain.supervised_step(model, opt, x, y).item() for _ in range(20)]
    assert losses[-1] < losses[0] - 0.5

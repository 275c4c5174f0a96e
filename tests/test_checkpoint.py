import dataclasses
import json
import random

import pytest
import torch

import nano_aspo as na
import rewards

CPU = torch.device("cpu")


def _cfg(tmp_path, **kw):
    kw = dict(pretrain_steps=3, pretrain_batch=16, train_problems=100, n_layer=1, n_embd=16, n_head=2) | kw
    return na.Config(out_dir=str(tmp_path), **kw)


def _quiet(*a, **k):
    pass


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_is_trained_once_then_loaded(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    m1, p1, s1 = na.load_or_pretrain(cfg, CPU, log=_quiet)
    assert s1 > 0
    assert p1.exists() and p1.parent == tmp_path and p1.name.startswith("pretrained-")
    # pretraining changed the weights (it is not just a fresh init)
    torch.manual_seed(cfg.pretrain_seed)
    assert not _same_weights(m1, na.GPT(na.model_config(cfg)))

    def no_training(*a, **k):
        raise AssertionError("pretraining ran although a matching checkpoint exists")

    # (not na.pretrain itself: its source is part of the checkpoint key)
    monkeypatch.setattr(rewards, "random_problem", no_training)
    mtime = p1.stat().st_mtime_ns
    m2, p2, s2 = na.load_or_pretrain(cfg, CPU, log=_quiet)
    assert p2 == p1 and s2 == 0.0
    assert _same_weights(m1, m2)
    assert p1.stat().st_mtime_ns == mtime

    # an RL-only setting reuses the checkpoint
    m4, p4, s4 = na.load_or_pretrain(dataclasses.replace(cfg, lr=0.5, steps=3, methods="aspo", seeds="4,5",
                                                          clip_c=5.0), CPU, log=_quiet)
    assert p4 == p1 and s4 == 0.0 and _same_weights(m1, m4)
    monkeypatch.undo()

    # a pretraining setting gives another file and trains again
    assert cfg.teacher_noise != 0.3
    m3, p3, s3 = na.load_or_pretrain(dataclasses.replace(cfg, teacher_noise=0.3), CPU, log=_quiet)
    assert p3 != p1 and p3.exists() and p1.exists() and s3 > 0
    assert not _same_weights(m1, m3)


def test_pretraining_is_deterministic(tmp_path):
    a, _, _ = na.load_or_pretrain(_cfg(tmp_path / "a"), CPU, log=_quiet)
    b, _, _ = na.load_or_pretrain(_cfg(tmp_path / "b"), CPU, log=_quiet)
    assert _same_weights(a, b)


def _corrupt_with(path, kind, key):
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 not a checkpoint\n\xff\xfe" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other_dict":
        torch.save({"weights": {}}, path)
    elif kind == "other_key":
        torch.save({"key": {"settings": {}, "code_sha256": "0" * 64}, "model": {}}, path)
    elif kind == "bad_state":  # right key, tensors that do not fit the model
        torch.save({"key": key, "model": {"wte.weight": torch.zeros(3, 3)}}, path)
    elif kind == "list":
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("kind", ["garbage", "empty", "other_dict", "other_key", "bad_state", "list"])
def test_corrupt_checkpoint_raises_one_line_runtime_error(tmp_path, kind):
    cfg = _cfg(tmp_path)
    _, path, _ = na.load_or_pretrain(cfg, CPU, log=_quiet)
    _corrupt_with(path, kind, na.pretrain_key(cfg))
    with pytest.raises(RuntimeError) as e:
        na.load_or_pretrain(cfg, CPU, log=_quiet)
    msg = str(e.value)
    assert str(path) in msg
    assert "\n" not in msg and "\r" not in msg


def test_main_reports_a_corrupt_checkpoint_in_one_line(tmp_path, capsys, tiny_args):
    argv = tiny_args + ["--steps", "1", "--quiet", "--out-dir", str(tmp_path), "--methods", "grpo"]
    cfg = na.parse_config(argv)
    _, path, _ = na.load_or_pretrain(cfg, CPU, log=_quiet)
    path.write_bytes(b"garbage")
    capsys.readouterr()
    assert na.main(argv) == 1
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert len(err) == 1 and str(path) in err[0]


def _written(x, y):
    """(prompt, completion the teacher wrote) per row: the prompt from the inputs, the completion decoded
    from the targets that are not -100, which end with exactly one EOS; every target is the next input."""
    rows = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        assert xi[0] == na.BOS
        text = na.decode([t for t in xi if t != na.PAD])
        targets = [t for t in yi if t != -100]
        assert targets[-1] == na.EOS and targets.count(na.EOS) == 1
        for j, t in enumerate(yi[:-1]):  # the shift is right
            if t != -100:
                assert xi[j + 1] == t
        rows.append((text[len("<|bos|>"):text.index("=") + 1], na.decode(targets[:-1])))
    return rows


def _carry(prompt):
    return rewards.carry_problem([int(v) for v in prompt[:-1].split("+")], 3)


def test_teacher_batch_fresh_training_problems_and_the_strategy_mixture(tmp_path):
    rows = _written(*na.teacher_batch(_cfg(tmp_path, careful_share=0.3, teacher_noise=0.0, careful_noise=0.0),
                                      400, random.Random(0), CPU))
    assert len({pr for pr, _ in rows}) > 390  # fresh problems, not a small pool
    assert all(rewards.split_of(pr) == "train" for pr, _ in rows)  # never a held-out prompt
    careful = [w == _carry(pr).answer for pr, w in rows]
    assert all(c or w == _carry(pr).shortcut for (pr, w), c in zip(rows, careful))  # one of the two strategies
    assert 0.24 < sum(careful) / len(rows) < 0.36
    # the shortcut is right exactly on easy problems, the careful answer everywhere
    assert all(rewards.score(_carry(pr), w) == float(c or _carry(pr).easy) for (pr, w), c in zip(rows, careful))


def test_teacher_noise_per_strategy(tmp_path):
    # careful answers always corrupted, shortcut answers never: exactly the careful rows are wrong strings
    cfg = _cfg(tmp_path, careful_share=0.5, teacher_noise=0.0, careful_noise=0.999999)
    rows = _written(*na.teacher_batch(cfg, 200, random.Random(1), CPU))
    shortcut = [w == _carry(pr).shortcut for pr, w in rows]
    assert 60 < sum(shortcut) < 140
    for (pr, w), s in zip(rows, shortcut):
        if not s:  # a careful answer with one digit changed: same length, still marked c, wrong
            assert w[0] == "c" and len(w) == len(_carry(pr).answer) and rewards.score(_carry(pr), w) == 0.0


def test_teacher_batch_split_completions_are_correct_and_diverse(tmp_path):
    cfg = _cfg(tmp_path, task="split", teacher_noise=0.0)
    for prompt, written in _written(*na.teacher_batch(cfg, 64, random.Random(0), CPU)):
        assert rewards.score(rewards.SplitProblem(prompt, "", parts=2), written) == 1.0, written
    # (almost) full noise: every completion is wrong (one digit changed changes the sum)
    cfg = _cfg(tmp_path, task="split", teacher_noise=0.999999)
    rows = _written(*na.teacher_batch(cfg, 64, random.Random(0), CPU))
    assert all(rewards.score(rewards.SplitProblem(pr, "", parts=2), w) == 0.0 for pr, w in rows)


def test_task_and_teacher_mixture_are_part_of_the_checkpoint_key(tmp_path):
    cfgs = [_cfg(tmp_path, task="split"), _cfg(tmp_path, task="arith"), _cfg(tmp_path),
            _cfg(tmp_path, careful_share=0.5), _cfg(tmp_path, careful_noise=0.1)]
    keys = [json.dumps(na.pretrain_key(c), sort_keys=True) for c in cfgs]
    assert len(set(keys)) == len(keys)
    # the RL prompt pool does not shape the checkpoint: pretraining draws its own fresh problems
    assert na.pretrain_key(_cfg(tmp_path, train_problems=300, easy_share=0.5)) == na.pretrain_key(cfgs[2])
    assert isinstance(na.task_problems(cfgs[0], "train")[0], rewards.SplitProblem)
    assert isinstance(na.task_problems(cfgs[2], "train")[0], rewards.CarryProblem)

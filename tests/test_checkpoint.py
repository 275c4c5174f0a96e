import dataclasses
import random

import pytest
import torch

import nano_aspo as na
import rewards

CPU = torch.device("cpu")


def _cfg(tmp_path, **kw):
    return na.Config(pretrain_steps=3, pretrain_batch=16, train_problems=100, n_layer=1, n_embd=16, n_head=2,
                     out_dir=str(tmp_path), **kw)


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
    monkeypatch.setattr(rewards, "make_problems", no_training)
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


def test_teacher_batch_targets_only_the_answer_and_eos():
    problems = rewards.make_problems(20, 0, "train")
    x, y = na.teacher_batch(problems, 16, random.Random(0), 0.0, CPU)
    assert x.shape == y.shape
    by_prompt = {p.prompt: p.answer for p in problems}
    for xi, yi in zip(x.tolist(), y.tolist()):
        assert xi[0] == na.BOS
        text = na.decode([t for t in xi if t != na.PAD])
        prompt = text[len("<|bos|>"):text.index("=") + 1]
        targets = [t for t in yi if t != -100]
        assert na.decode(targets) == by_prompt[prompt] + "<|eos|>"
        # every target is the next input token (the shift is right)
        for j, t in enumerate(yi[:-1]):
            if t != -100:
                assert xi[j + 1] == t
    # (almost) full noise: every answer is corrupted, with the same length
    x1, y1 = na.teacher_batch(problems, 16, random.Random(0), 0.999999, CPU)
    for xi, yi in zip(x1.tolist(), y1.tolist()):
        text = na.decode([t for t in xi if t != na.PAD])
        answer = by_prompt[text[len("<|bos|>"):text.index("=") + 1]]
        written = na.decode([t for t in yi if t != -100])[:-len("<|eos|>")]
        assert written != answer and len(written) == len(answer)


def test_task_and_scratch_share_are_part_of_the_checkpoint_key(tmp_path):
    split = _cfg(tmp_path, task="split")
    arith = _cfg(tmp_path, task="arith")
    scratch = _cfg(tmp_path, task="arith", scratch_share=0.2)
    keys = [na.pretrain_key(c) for c in (split, arith, scratch)]
    assert keys[0]["settings"]["task"] == "split" and keys[2]["settings"]["scratch_share"] == 0.2
    assert keys[0] != keys[1] != keys[2] != keys[0]
    # and so are the problems it is trained on
    assert isinstance(na.task_problems(split, "train")[0], rewards.SplitProblem)
    assert not isinstance(na.task_problems(arith, "train")[0], rewards.SplitProblem)
    assert all(p.scratch_ok for p in na.task_problems(scratch, "train") + na.task_problems(scratch, "test"))
    assert not any(p.scratch_ok for p in na.task_problems(arith, "train"))


def _written(x, y):
    """(prompt, completion the teacher wrote) per row: the prompt from the inputs, the completion decoded
    from the targets that are not -100, which end with exactly one EOS."""
    rows = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        text = na.decode([t for t in xi if t != na.PAD])
        targets = [t for t in yi if t != -100]
        assert targets[-1] == na.EOS and targets.count(na.EOS) == 1
        rows.append((text[len("<|bos|>"):text.index("=") + 1], na.decode(targets[:-1])))
    return rows


def test_teacher_batch_scratchpad_share_one_writes_every_answer_as_a_scratchpad():
    problems = rewards.make_problems(20, 0, "train", ops="+-", scratch=True)
    by_prompt = {p.prompt: p for p in problems}
    x, y = na.teacher_batch(problems, 32, random.Random(0), 0.0, CPU, scratch_share=1.0)
    for prompt, written in _written(x, y):
        p = by_prompt[prompt]
        assert written == rewards.scratchpad(p.answer) and written.startswith("(")
        assert rewards.score(p, written) == 1.0
    # share 0: never; share 0.5: both forms, each a correct completion
    x0, y0 = na.teacher_batch(problems, 32, random.Random(0), 0.0, CPU, scratch_share=0.0)
    assert all(w == by_prompt[pr].answer for pr, w in _written(x0, y0))
    x5, y5 = na.teacher_batch(problems, 64, random.Random(0), 0.0, CPU, scratch_share=0.5)
    rows = _written(x5, y5)
    n_scratch = sum(w.startswith("(") for _, w in rows)
    assert 10 < n_scratch < 54
    assert all(rewards.score(by_prompt[pr], w) == 1.0 for pr, w in rows)


def test_teacher_batch_split_completions_are_correct_and_diverse():
    problems = rewards.make_problems(4, 0, "train", digits=3, task="split")
    by_prompt = {p.prompt: p for p in problems}
    x, y = na.teacher_batch(problems, 32, random.Random(0), 0.0, CPU)
    rows = _written(x, y)
    assert len({pr for pr, _ in rows}) == 4
    for prompt, written in rows:
        assert by_prompt[prompt].accepts(written) and rewards.score(by_prompt[prompt], written) == 1.0, written
    # one problem, one batch: the teacher writes many different correct splits, not one canonical answer
    x1, y1 = na.teacher_batch(problems[:1], 16, random.Random(1), 0.0, CPU)
    written = [w for _, w in _written(x1, y1)]
    assert all(problems[0].accepts(w) for w in written)
    assert len(set(written)) > 8
    # (almost) full noise: every completion is wrong (one digit changed changes the sum)
    xn, yn = na.teacher_batch(problems, 32, random.Random(0), 0.999999, CPU)
    assert all(rewards.score(by_prompt[pr], w) == 0.0 for pr, w in _written(xn, yn))

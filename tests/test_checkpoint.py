"""The cached pretrained checkpoint: trained once then loaded, its key, and a corrupt or foreign file as one
line (model.save_checkpoint / load_checkpoint, through pretrain.load_start and directly)."""
import dataclasses
import json

import pytest
import torch

import nano_aspo as na
import pretrain
import rewards

from model import GPT, GPTConfig, load_checkpoint, save_checkpoint

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
    m1, p1, s1 = pretrain.load_start(cfg, CPU, log=_quiet)
    assert s1 > 0
    assert p1.exists() and p1.parent == tmp_path and p1.name.startswith("pretrained-")
    # pretraining changed the weights (it is not just a fresh init)
    torch.manual_seed(cfg.pretrain_seed)
    assert not _same_weights(m1, GPT(na.model_config(cfg)))

    def no_training(*a, **k):
        raise AssertionError("pretraining ran although a matching checkpoint exists")

    # (the key itself runs the first steps of pretraining: a full run is what saves a checkpoint)
    monkeypatch.setattr(pretrain, "save_checkpoint", no_training)
    mtime = p1.stat().st_mtime_ns
    m2, p2, s2 = pretrain.load_start(cfg, CPU, log=_quiet)
    assert p2 == p1 and s2 == 0.0
    assert _same_weights(m1, m2)
    assert p1.stat().st_mtime_ns == mtime

    # an RL-only setting reuses the checkpoint
    m4, p4, s4 = pretrain.load_start(dataclasses.replace(cfg, lr=0.5, steps=3, methods="aspo", seeds="4,5",
                                                          clip_c=5.0), CPU, log=_quiet)
    assert p4 == p1 and s4 == 0.0 and _same_weights(m1, m4)
    monkeypatch.undo()

    # a pretraining setting gives another file and trains again
    assert cfg.shortcut_noise != 0.3
    m3, p3, s3 = pretrain.load_start(dataclasses.replace(cfg, shortcut_noise=0.3), CPU, log=_quiet)
    assert p3 != p1 and p3.exists() and p1.exists() and s3 > 0
    assert not _same_weights(m1, m3)


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
    _, path, _ = pretrain.load_start(cfg, CPU, log=_quiet)
    _corrupt_with(path, kind, pretrain.pretrain_key(cfg))
    with pytest.raises(RuntimeError) as e:
        pretrain.load_start(cfg, CPU, log=_quiet)
    msg = str(e.value)
    assert str(path) in msg
    assert "\n" not in msg and "\r" not in msg


def test_main_reports_a_corrupt_checkpoint_in_one_line(tmp_path, capsys, tiny_args):
    argv = tiny_args + ["--steps", "1", "--quiet", "--out-dir", str(tmp_path), "--methods", "grpo"]
    cfg = na.parse_config(argv)
    _, path, _ = pretrain.load_start(cfg, CPU, log=_quiet)
    path.write_bytes(b"garbage")
    capsys.readouterr()
    assert na.main(argv) == 1
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert len(err) == 1 and str(path) in err[0]


def test_task_and_teacher_mixture_are_part_of_the_checkpoint_key(tmp_path):
    cfgs = [_cfg(tmp_path, digits=2), _cfg(tmp_path, operands=3), _cfg(tmp_path),
            _cfg(tmp_path, careful_share=0.5), _cfg(tmp_path, careful_noise=0.1)]
    keys = [json.dumps(pretrain.pretrain_key(c), sort_keys=True) for c in cfgs]
    assert len(set(keys)) == len(keys)
    # the RL prompt pool does not shape the checkpoint: pretraining draws its own fresh problems
    assert pretrain.pretrain_key(_cfg(tmp_path, train_problems=300, easy_share=0.5)) == pretrain.pretrain_key(cfgs[2])
    assert all(isinstance(p, rewards.CarryProblem) for p in na.task_problems(cfgs[2], "train"))


def test_save_then_load_checkpoint_round_trips_and_checks_the_key(tmp_path):
    config = GPTConfig(vocab_size=8, block_size=6, n_layer=1, n_head=2, n_embd=8)
    torch.manual_seed(0)
    model = GPT(config)
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, model, {"a": 1})
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # the temporary file was renamed
    assert _same_weights(load_checkpoint(path, config, {"a": 1}, CPU), model)
    with pytest.raises(RuntimeError, match="its key does not match"):
        load_checkpoint(path, config, {"a": 2}, CPU)

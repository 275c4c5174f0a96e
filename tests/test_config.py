import dataclasses
import itertools

import pytest
import torch

import nano_aspo as na
import tokenizer
import rewards


def test_defaults_are_valid():
    cfg = na.parse_config([])
    assert cfg == na.Config()
    assert cfg.method_list == ["grpo", "aspo"] and cfg.seed_list == [0]
    assert cfg.mu == cfg.minibatches * cfg.epochs == 32
    # the demo's task: two 3-digit numbers added, a rare careful strategy beside a common shortcut
    assert (cfg.digits, cfg.operands) == (3, 2)
    assert 0 < cfg.careful_share < 0.5 and cfg.easy_share > 0.5
    assert cfg.eval_problems >= 500 and cfg.curve_problems <= cfg.eval_problems


@pytest.mark.parametrize("argv", [["--eps-low", "0.1", "--seeds", "0,1,2", "--methods", "grpo,nois", "--out-dir", "o2",
                                   "--n-layer", "3", "--quiet", "--no-adv-std"],
                                  ["--eps-low=0.1", "--seeds=0,1,2", "--methods=grpo,nois", "--out-dir=o2",
                                   "--n-layer=3", "--quiet", "--no-adv-std"]])
def test_both_flag_forms(argv):
    cfg = na.parse_config(argv)
    assert cfg.eps_low == 0.1 and isinstance(cfg.eps_low, float)
    assert cfg.seed_list == [0, 1, 2] and cfg.method_list == ["grpo", "nois"]
    assert cfg.out_dir == "o2" and cfg.n_layer == 3 and isinstance(cfg.n_layer, int)
    assert cfg.quiet is True and cfg.adv_std is False


@pytest.mark.parametrize("flag,value", [("--methods", "foo"), ("--methods", "grpo,foo"), ("--methods", ""),
                                        ("--seeds", ""), ("--seeds", "a"), ("--seeds", "1,b"),
                                        ("--seeds", "0,,1"), ("--seeds", "0,"), ("--methods", "grpo,"),
                                        ("--methods", "grpo,,aspo"),
                                        ("--eps-low", "0"), ("--eps-low", "1.5"), ("--eps-high", "0"),
                                        ("--eps-high", "1"), ("--clip-c", "1"), ("--group", "1"),
                                        ("--temperature", "0"), ("--temperature", "-1"), ("--minibatches", "0"),
                                        ("--epochs", "0"), ("--device", "tpu"), ("--n-layer", "-1"), ("--n-layer", "0"),
                                        ("--lr", "0"), ("--grad-clip", "0"), ("--shortcut-noise", "1"),
                                        ("--digits", "0"), ("--operands", "1"), ("--k", "17"), ("--k", "1"), ("--curve-problems", "501"),
                                        ("--careful-share", "1.5"), ("--careful-share", "-0.1"),
                                        ("--easy-share", "1.01"), ("--careful-noise", "1"), ("--steps", "-1"),
                                        ("--curve-problems", "0"),
                                        ("--device", "cuda:abc"), ("--device", "cpu:0"), ("--prompts", "801")])
@pytest.mark.parametrize("form", ["space", "equals"])
def test_bad_values_raise_naming_the_flag(flag, value, form):
    argv = [flag, value] if form == "space" else [f"{flag}={value}"]
    with pytest.raises(ValueError) as e:
        na.parse_config(argv)
    assert flag in str(e.value)


def test_n_embd_must_divide_by_n_head():
    with pytest.raises(ValueError, match="--n-embd"):
        na.parse_config(["--n-embd", "30", "--n-head", "4"])


def test_main_reports_a_bad_flag_in_one_line(capsys, tmp_path):
    rc = na.main(["--group", "1", "--out-dir", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 2
    lines = cap.err.strip("\n").split("\n")
    assert len(lines) == 1 and "--group" in lines[0]
    assert not (tmp_path / "o").exists()  # nothing was started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_main_reports_missing_cuda_in_one_line(capsys, tmp_path):
    rc = na.main(["--device", "cuda", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 2 and len(err) == 1 and "--device" in err[0]


def test_main_reports_an_impossible_problem_count_in_one_line(capsys, tmp_path, tiny_args):
    # digits=1, operands=2: about 90 train prompts exist, so 200 distinct ones cannot. main should say so in
    # one line and return non-zero, not crash with a traceback.
    rc = na.main(tiny_args + ["--digits", "1", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 2
    assert len(err) == 1 and "--train-problems" in err[0], err


@pytest.mark.parametrize("gone", [["--task", "carry"], ["--ops", "+"]])
def test_removed_flags_are_refused(capsys, gone):
    with pytest.raises(SystemExit) as e:  # the carry task is the only task
        na.parse_config(gone)
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_main_reports_too_many_eval_problems_in_one_line(capsys, tmp_path, tiny_args):
    # digits=1: 100 carry prompts exist, about 10 of them held out: 50 held-out problems cannot exist
    rc = na.main(tiny_args + ["--digits", "1", "--train-problems", "20", "--eval-problems", "50",
                              "--curve-problems", "8", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 2 and len(err) == 1 and "--eval-problems" in err[0], err


def test_main_reports_an_unusable_out_dir_in_one_line(capsys, tmp_path, tiny_args):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc = na.main(tiny_args + ["--out-dir", str(blocker)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 2 and len(err) == 1 and "--out-dir" in err[0], err


def test_shares_accept_their_whole_range():
    for value in ("0", "0.2", "1"):
        cfg = na.parse_config(["--careful-share", value, "--easy-share", value])
        assert cfg.careful_share == cfg.easy_share == float(value)
    assert na.parse_config(["--steps", "0"]).steps == 0  # evaluates the start only


def test_max_new_tokens_and_block_size_fit_the_longest_carry_answer():
    for digits, operands in itertools.product((1, 2, 3, 4), (2, 3)):
        cfg = na.parse_config(["--digits", str(digits), "--operands", str(operands)])
        top = [10 ** digits - 1] * operands
        p = rewards.carry_problem(top, digits)  # the largest sum: the longest careful answer
        assert len(tokenizer.encode(p.answer)) + 1 + 2 <= na.max_new_tokens(cfg)  # + EOS + the 2 spare tokens
        assert len(na.prompt_ids(p)) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg)


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        na.parse_config(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(na.Config):
        assert "--" + f.name.replace("_", "-") in out

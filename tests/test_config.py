import dataclasses
import itertools
import random

import pytest
import torch

import nano_aspo as na
import rewards


def test_defaults_are_valid():
    cfg = na.parse_config([])
    assert cfg == na.Config()
    assert cfg.method_list == ["grpo", "aspo"] and cfg.seed_list == [0]
    assert cfg.mu == cfg.minibatches * cfg.epochs == 32
    # the demo's task: two 3-digit numbers added, a rare careful strategy beside a common shortcut
    assert (cfg.task, cfg.digits, cfg.operands) == ("carry", 3, 2)
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
                                        ("--eps-low", "0"), ("--eps-low", "1.5"), ("--eps-high", "0"),
                                        ("--eps-high", "1"), ("--clip-c", "1"), ("--group", "1"),
                                        ("--temperature", "0"), ("--temperature", "-1"), ("--minibatches", "0"),
                                        ("--epochs", "0"), ("--device", "tpu"), ("--n-layer", "-1"), ("--n-layer", "0"),
                                        ("--lr", "0"), ("--grad-clip", "0"), ("--teacher-noise", "1"),
                                        ("--digits", "0"), ("--operands", "1"), ("--ops", "/"), ("--k", "17"), ("--k", "1"), ("--curve-problems", "501"),
                                        ("--task", "foo"), ("--task", ""), ("--task", "Split"),
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


@pytest.mark.parametrize("task", ["arith", "split"])
def test_main_reports_an_impossible_problem_count_in_one_line(capsys, tmp_path, tiny_args, task):
    # digits=1, operands=2: arith ('+') has ~90 train prompts, split has 8 values of N: 200 distinct ones cannot
    # exist. main should say so in one line and return non-zero, not crash with a traceback.
    rc = na.main(tiny_args + ["--task", task, "--digits", "1", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 2
    assert len(err) == 1 and "--train-problems" in err[0], err


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


def _longest_answer(digits, operands, ops):
    """Longest canonical answer over all problems: the value is multilinear in the operands, so its
    extremes are at operands in {0, 10**digits - 1}."""
    top = 10 ** digits - 1
    return max(len(str(rewards.evaluate(list(xs), "".join(os_))))
               for xs in itertools.product((0, top), repeat=operands)
               for os_ in itertools.product(ops, repeat=operands - 1))


def test_max_new_tokens_fits_longest_answer_plus_eos_and_two_spare():
    # max_new_tokens' docstring: "Room for the longest possible answer of the task, plus the end token and 2 spare"
    bad = []
    for digits, operands, ops in itertools.product((1, 2, 3, 4, 5), (2, 3), ("+", "-", "*", "+-", "+-*")):
        cfg = na.Config(task="arith", digits=digits, operands=operands, ops=ops)
        need = _longest_answer(digits, operands, ops) + 1 + 2
        if na.max_new_tokens(cfg) < need:
            bad.append((digits, operands, ops, na.max_new_tokens(cfg), need))
    assert bad == [], "(digits, operands, ops, max_new_tokens, needed): " + repr(bad)


def test_block_size_fits_longest_prompt_and_completion():
    for digits, operands, ops in itertools.product((1, 2, 3), (2, 3), ("+", "+-*")):
        cfg = na.Config(task="arith", digits=digits, operands=operands, ops=ops)
        top = str(10 ** digits - 1)
        prompt = na.prompt_ids(rewards.Problem(ops[0].join([top] * operands) + "=", "0"))
        assert len(prompt) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg)
        assert na.model_config(cfg).block_size == na.block_size(cfg)


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
        assert len(na.encode(p.answer)) + 1 + 2 <= na.max_new_tokens(cfg)  # + EOS + the 2 spare tokens
        assert len(na.prompt_ids(p)) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg)


def _longest_split(digits, parts):
    """Longest correct split over every N of the split task: a tuple of part lengths (l_1..l_parts) can sum
    to N iff sum 10**(l-1) <= N <= sum (10**l - 1) (sums of integer intervals are intervals)."""
    lo, hi = max(10 ** (digits - 1), parts), 10 ** digits - 1  # the range of N
    return max(sum(lens) + parts - 1 for lens in itertools.product(range(1, digits + 1), repeat=parts)
               if sum(10 ** (ln - 1) for ln in lens) <= hi and sum(10 ** ln - 1 for ln in lens) >= lo)


def test_max_new_tokens_and_block_size_fit_the_longest_split():
    assert _longest_split(3, 2) == len("500+499")  # not "999+999" (too big) nor "998+1" (short)
    assert rewards.SplitProblem("999=", "", parts=2).accepts("500+499")
    assert _longest_split(1, 3) == len("1+1+1") and _longest_split(2, 2) == len("50+49")
    for digits, operands in itertools.product((1, 2, 3, 4), (2, 3)):
        argv = ["--task", "split", "--digits", str(digits), "--operands", str(operands)]
        cfg = na.parse_config(argv)
        longest = _longest_split(digits, operands)
        assert na.max_new_tokens(cfg) >= longest + 1 + 2, argv  # + EOS + the 2 spare tokens of the docstring
        prompt = na.prompt_ids(rewards.SplitProblem("9" * digits + "=", ""))  # the longest prompt
        assert len(prompt) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg) == na.model_config(cfg).block_size
    # every answer the teacher writes in the demo's setting fits with its EOS
    cfg = na.parse_config(["--task", "split", "--digits", "3", "--operands", "2"])
    rng = random.Random(0)
    for p in rewards.make_problems(100, 0, "train", digits=3, operands=2, task="split"):
        for _ in range(20):
            assert len(na.encode(p.random_answer(rng))) + 1 <= na.max_new_tokens(cfg)


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        na.parse_config(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(na.Config):
        assert "--" + f.name.replace("_", "-") in out

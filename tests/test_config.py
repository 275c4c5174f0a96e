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
    # the demo's task: 3-digit N written as a sum of 2 positive parts
    assert (cfg.task, cfg.digits, cfg.operands, cfg.scratch_share) == ("split", 3, 2, 0.0)
    assert (cfg.train_problems, cfg.eval_problems, cfg.pretrain_steps, cfg.minibatches) == (800, 80, 2500, 8)


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
                                        ("--digits", "0"), ("--operands", "1"), ("--ops", "/"), ("--k", "17"),
                                        ("--task", "foo"), ("--task", ""), ("--task", "Split"),
                                        ("--scratch-share", "0.5"), ("--scratch-share", "1.5"),
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


def test_scratch_share_range_and_task():
    for value in ("0", "0.2", "1", "1.0"):
        assert na.parse_config(["--task", "arith", "--scratch-share", value]).scratch_share == float(value)
    for value in ("1.5", "-0.1", "1.0001"):
        with pytest.raises(ValueError, match="--scratch-share"):  # the range check itself, not the task check
            na.parse_config(["--task", "arith", "--scratch-share", value])
    for value in ("0.5", "1", "1.5"):
        with pytest.raises(ValueError, match="--scratch-share"):
            na.parse_config(["--task", "split", "--scratch-share", value])
    assert na.parse_config(["--task", "split", "--scratch-share", "0"]).scratch_share == 0.0
    assert na.parse_config(["--task", "arith"]).task == "arith"


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
    for p in rewards.make_problems(100, 0, "train", 3, 2, task="split"):
        for _ in range(20):
            assert len(na.encode(p.random_answer(rng))) + 1 <= na.max_new_tokens(cfg)


@pytest.mark.parametrize("ops", ["+", "-", "+-*"])
def test_max_new_tokens_and_block_size_fit_the_longest_scratchpad(ops):
    for digits, operands in itertools.product((1, 2, 3), (2, 3)):
        cfg = na.parse_config(["--task", "arith", "--scratch-share", "0.2", "--digits", str(digits),
                               "--operands", str(operands), "--ops", ops])
        longest = _longest_answer(digits, operands, ops)
        # the longest scratchpad: a negative answer's "-" appears twice, "(<reversed>)" adds 2 characters
        need = max(len(rewards.scratchpad(str(v))) for v in (10 ** longest - 1, -(10 ** (longest - 1) - 1)))
        assert need >= 2 * longest + 2
        assert na.max_new_tokens(cfg) >= need + 1, (digits, operands, ops)  # + EOS
        top = str(10 ** digits - 1)
        prompt = na.prompt_ids(rewards.Problem(ops[0].join([top] * operands) + "=", "0"))
        assert len(prompt) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg)
        # the scratchpad form costs room: more than the plain task
        assert na.max_new_tokens(cfg) > na.max_new_tokens(na.Config(task="arith", digits=digits, operands=operands, ops=ops))


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        na.parse_config(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(na.Config):
        assert "--" + f.name.replace("_", "-") in out

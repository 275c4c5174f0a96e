import itertools

import pytest
import torch

import nano_aspo as na
import rewards


def test_defaults_are_valid():
    cfg = na.parse_config([])
    assert cfg == na.Config()
    assert cfg.method_list == ["grpo", "aspo"] and cfg.seed_list == [0] and cfg.mu == 16


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
                                        ("--digits", "0"), ("--operands", "1"), ("--ops", "/"), ("--k", "17")])
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
    # digits=1, operands=2, ops='+' has ~90 train prompts: 200 distinct ones cannot exist. main should say so
    # in one line and return non-zero, not crash with a traceback.
    rc = na.main(tiny_args + ["--digits", "1", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc != 0
    assert len(err) == 1, err


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
        cfg = na.Config(digits=digits, operands=operands, ops=ops)
        need = _longest_answer(digits, operands, ops) + 1 + 2
        if na.max_new_tokens(cfg) < need:
            bad.append((digits, operands, ops, na.max_new_tokens(cfg), need))
    assert bad == [], "(digits, operands, ops, max_new_tokens, needed): " + repr(bad)


def test_block_size_fits_longest_prompt_and_completion():
    for digits, operands, ops in itertools.product((1, 2, 3), (2, 3), ("+", "+-*")):
        cfg = na.Config(digits=digits, operands=operands, ops=ops)
        top = str(10 ** digits - 1)
        prompt = na.prompt_ids(rewards.Problem(ops[0].join([top] * operands) + "=", "0"))
        assert len(prompt) + na.max_new_tokens(cfg) - 1 <= na.block_size(cfg)
        assert na.model_config(cfg).block_size == na.block_size(cfg)

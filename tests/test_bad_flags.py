"""Bad command-line values that had no test: each stops nano_aspo.main with exit 2 and one line on
stderr naming the flag, before any pretraining or training; and bad input the core is to refuse or
contain (duplicate methods or seeds, a file as --ckpt-dir, a user loss that breaks in training)."""
import json

import pytest

import nano_aspo as na
from test_check_loss import GOOD_HEADER, write


class Pretrained(Exception):
    """Raised where main would start pretraining: a refused flag must have stopped it before."""


@pytest.fixture
def refuse(tmp_path, tiny_args, capsys, monkeypatch):
    """main(tiny_args + argv) with pretraining forbidden: the (exit code, stderr lines)."""
    def pretrain(*a, **k):
        raise Pretrained

    monkeypatch.setattr(na, "load_start", pretrain)

    def run(*argv):
        rc = na.main(tiny_args + ["--out-dir", str(tmp_path / "out"), *argv])
        return rc, capsys.readouterr().err.strip("\n").split("\n")
    return run


@pytest.mark.parametrize("argv,flag", [
    (["--n-head", "0"], "--n-head"),
    (["--n-embd", "0"], "--n-embd"),
    (["--n-embd", "15", "--n-head", "2"], "--n-embd"),  # not divisible by the heads
    (["--pretrain-steps", "0"], "--pretrain-steps"),
    (["--pretrain-batch", "0"], "--pretrain-batch"),
    (["--pretrain-lr", "0"], "--pretrain-lr"),
    (["--shortcut-noise", "1"], "--shortcut-noise"),
    (["--careful-noise", "-0.1"], "--careful-noise"),
    (["--careful-share", "1.5"], "--careful-share"),
    (["--max-members", "0"], "--max-members"),
    (["--eval-every", "0"], "--eval-every"),
    (["--eval-problems", "0"], "--eval-problems"),
    # more than the held-out space of 1-digit sums holds (100 problems in all)
    (["--digits", "1", "--train-problems", "20", "--eval-problems", "200"], "--eval-problems"),
    (["--curve-problems", "0"], "--curve-problems"),
    (["--curve-problems", "9"], "--curve-problems"),  # more than --eval-problems 8
    (["--eval-samples", "0"], "--eval-samples"),
    (["--eval-easy-share", "1.5"], "--eval-easy-share"),
    (["--k", "1"], "--k"),
    (["--log-every", "0"], "--log-every"),
    (["--train-problems", "0"], "--train-problems"),
    (["--digits", "1", "--train-problems", "200"], "--train-problems"),  # more than it holds
])
def test_bad_flag_is_one_line_naming_it_before_any_work(refuse, argv, flag):
    rc, err = refuse(*argv)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("nano_aspo.py: error: ") and f"{flag} " in err[0], err


# --- the core is to refuse these (they fail until it does) -------------------------------------
@pytest.mark.parametrize("argv,flag", [
    (["--methods", "grpo,aspo,grpo"], "--methods"),  # a run paired with itself
    (["--seeds", "1,2,1"], "--seeds"),
])
def test_duplicate_methods_or_seeds_are_refused(refuse, argv, flag):
    rc, err = refuse(*argv)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"nano_aspo.py: error: {flag} "), err


def test_a_file_as_ckpt_dir_is_refused_before_any_work(refuse, tmp_path):
    # before: the whole pretraining ran, then saving the checkpoint raised FileExistsError
    (tmp_path / "a-file").write_text("")
    rc, err = refuse("--ckpt-dir", str(tmp_path / "a-file"))
    assert rc == 2 and len(err) == 1 and err[0].startswith("nano_aspo.py: error: --ckpt-dir "), err


# losses that pass validation (a batch of 3 rows) and break on the training batches (16 rows)
BREAKS_IN_TRAINING = {
    "raises": "    if log_prob.shape[0] > 3:\n        raise RuntimeError('boom')\n"
              "    return -(advantages * log_prob * response_mask).sum() / response_mask.sum()\n",
    "one loss per row": "    per_row = -(advantages * log_prob * response_mask).sum(-1)\n"
                        "    return per_row if log_prob.shape[0] > 3 else per_row.mean()\n",
}


@pytest.mark.parametrize("kind", BREAKS_IN_TRAINING)
def test_a_user_loss_that_breaks_in_training_stops_only_its_own_run(tmp_path, tiny_args, capsys,
                                                                     kind):
    spec = f"{write(tmp_path, GOOD_HEADER.format(extra='') + BREAKS_IN_TRAINING[kind])}:fn"
    na.parse_config(["--methods", spec])  # it passes validation
    out = tmp_path / "run"
    rc = na.main(tiny_args + ["--steps", "2", "--quiet", "--out-dir", str(out), "--seeds", "3",
                              "--methods", f"grpo,{spec}"])
    err = capsys.readouterr().err.strip("\n").split("\n")
    assert rc == 1 and len(err) == 1 and spec in err[0], err
    runs = {r["method"]: r for r in json.loads((out / "summary.json").read_text())["runs"]}
    assert "error" not in runs["grpo"] and runs["grpo"]["final"] is not None  # the other finished
    assert "error" in runs[spec] and runs[spec]["final"] is None

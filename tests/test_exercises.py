"""exercises/: check.py on the starters as shipped (each fails with one line naming what to write),
on solutions built from the core (pass) and on one plausible wrong solution per task (fails, naming
the case or the branch); ratio.py's numbers; and every command of the worksheet and its answer key,
run at tiny settings with those solutions in place of the starters."""
import json
import re

import pytest

import nano_aspo as na
from conftest import ROOT, TINY_ARGS
from exercises import check, ratio
from test_check_loss import WRAPPED
from test_docs_commands import commands
from test_rl import _alternating_score

EXERCISES = ROOT / "exercises"
WORKSHEET = [EXERCISES / "README.md", EXERCISES / "ANSWERS.md"]
GRADED = (1, 2, 3, 5)

# task 5 built from the core: grpo's loss on every token but the stale right ones (A > 0, r < 1),
# which get the rung's loss; each part is a token mean, so each is weighted back by its tokens
DOSE = """import nano_aspo as na

def my_dose(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
            config=None):
    clip = (config.clip_ratio_low, config.clip_ratio_high, config.clip_ratio_c)
    stale = (advantages > 0) & (log_prob.detach() < old_log_prob)
    parts = [("grpo", response_mask * ~stale), ("{rung}", response_mask * stale)]
    return sum(na.policy_loss(m, log_prob, old_log_prob, advantages[:, 0], mask, *clip)[0]
               * mask.sum() for m, mask in parts) / response_mask.sum().clamp(min=1)
"""
LOSS_HEADER = ("import torch\n\ndef {name}(old_log_prob, log_prob, advantages, response_mask, "
               "loss_agg_mode='token-mean', config=None):\n"
               "    eps_low, eps_high, c = config.clip_ratio_low, config.clip_ratio_high, "
               "config.clip_ratio_c\n    r = torch.exp(log_prob - old_log_prob)\n")
# one plausible wrong solution per task, and what its verdict must name
WRONG = {
    1: ("advantages.py", "def group_advantages(rewards, use_std=True):\n"
        "    centered = rewards - rewards.mean(dim=1, keepdim=True)\n"
        "    std = rewards.std(dim=1, unbiased=False, keepdim=True)  # the population std\n"
        "    return centered / (std + 1e-6) if use_std else centered\n",
        ["on random 0/1 rewards, 16 groups of 8: rewards [", "the sample std",
         "also wrong on: real-valued rewards, 4 groups of 5, G = 2"]),
    2: ("my_grpo.py", LOSS_HEADER.format(name="my_grpo") +  # PPO-clip without the dual-clip
        "    clipped = r.clamp(1 - eps_low, 1 + eps_high)\n"
        "    per_token = -torch.minimum(r * advantages, clipped * advantages)\n"
        "    return (per_token * response_mask).sum() / response_mask.sum()\n",
        ["1 of 18 branches differ from grpo: A < 0, r > c: w = r, grpo expects 0"]),
    3: ("my_aspo.py", LOSS_HEADER.format(name="my_aspo") +  # the flip without the soft dual-clip
        "    p = r.clamp(max=1 + eps_high)\n"
        "    positive = -advantages * (p / p.detach()) / p.detach()\n"
        "    ppo = torch.maximum(-advantages * r,\n"
        "                        -advantages * r.clamp(1 - eps_low, 1 + eps_high))\n"
        "    negative = torch.where(r > c, -advantages * c * log_prob, ppo)\n"
        "    per_token = torch.where(advantages > 0, positive, negative)\n"
        "    return (per_token * response_mask).sum() / response_mask.sum()\n",
        ["1 of 18 branches differ from aspo: A > 0, r < 1/c: w = 1/r, aspo expects c"]),
    # the dose on every right token, not only on those whose probability fell
    5: ("my_dose.py", DOSE.replace("{rung}", "nois").replace(
        "(advantages > 0) & (log_prob.detach() < old_log_prob)", "advantages > 0"),
        ["A > 0, 1 <= r < 1+eps_high: w = 1, grpo expects r"]),
}


def solutions(folder, rung="nois"):
    """Correct solutions built from the core in folder: task 1 is the core's own function, tasks 2
    and 3 its losses behind verl's calling convention, task 5 a dose of `rung`'s weight."""
    folder.mkdir(exist_ok=True)
    (folder / "advantages.py").write_text("from nano_aspo import group_advantages  # noqa\n")
    for method in ("grpo", "aspo"):
        (folder / f"my_{method}.py").write_text(WRAPPED.format(method=method)
                                                .replace("def loss(", f"def my_{method}("))
    (folder / "my_dose.py").write_text(DOSE.replace("{rung}", rung))
    return folder


def run_check(capsys, *argv):
    """check.main -> (exit code, stdout lines, stderr)."""
    rc = check.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out.splitlines(), out.err


def verdicts(lines):
    """{task: (verdict, text)} of check.py's one-line verdicts."""
    found = [re.match(r"task (\d) \([^)]*\): (ok|FAIL|--): (.*)$", line) for line in lines]
    return {int(m.group(1)): (m.group(2), m.group(3)) for m in found if m}


def test_the_starters_as_shipped_fail_with_one_line_each_naming_what_to_write(capsys):
    rc, out, err = run_check(capsys)
    assert rc == 1 and err == "" and len(out) == 5, out
    got = verdicts(out)
    for task in GRADED:
        verdict, text = got[task]
        assert verdict == "FAIL", text
        assert f"raised NotImplementedError: task {task}: write " in text, text
    assert got[4][0] == "--"  # nothing to grade: a prediction and a measurement
    for task in GRADED:  # each alone: the same verdict, and no traceback
        rc, out, err = run_check(capsys, task)
        assert rc == 1 and err == "" and "NotImplementedError" in verdicts(out)[task][1]


@pytest.mark.parametrize("rung,dose", [("nois", "r < 1/c: w = 1; 1/c <= r < 1-eps_low: w = 1"),
                                       ("aspo", "r < 1/c: w = c; 1/c <= r < 1-eps_low: w = 1/r"),
                                       ("grpo", "GRPO's own r")])
def test_solutions_built_from_the_core_pass(capsys, tmp_path, rung, dose):
    rc, out, err = run_check(capsys, "--dir", solutions(tmp_path / "s", rung))
    got = verdicts(out)
    assert rc == 0 and err == "" and [got[t][0] for t in GRADED] == ["ok"] * 4, out
    assert got[1][1] == "matches nano_aspo.group_advantages on all 5 cases"
    assert got[2][1].startswith("all 18 branches match grpo")
    assert got[3][1].startswith("all 18 branches match aspo")
    assert got[5][1].startswith("grpo's weight in the other 14 branches") and dose in got[5][1]


def test_one_task_alone_prints_its_details(capsys, tmp_path):
    folder = solutions(tmp_path / "s")
    rc, out, _ = run_check(capsys, 2, "--dir", folder)  # check_loss's table, then the verdict
    assert rc == 0 and out[1].startswith("branch") and len(out) == 2 + 18 + 1 + 1
    assert list(verdicts(out)) == [2]
    rc, out, _ = run_check(capsys, 1, "--dir", folder)
    assert rc == 0 and out[:-1] == [f"  ok: {name}" for name, *_ in check.advantage_cases()]


@pytest.mark.parametrize("task", sorted(WRONG))
def test_a_plausible_wrong_solution_fails_naming_the_case_or_branch(capsys, tmp_path, task):
    folder = solutions(tmp_path / "s")
    file, source, says = WRONG[task]
    (folder / file).write_text(source)
    rc, out, err = run_check(capsys, "--dir", folder)
    got = verdicts(out)
    assert rc == 1 and err == ""
    assert got[task][0] == "FAIL" and all(s in got[task][1] for s in says), got[task]
    assert [got[t][0] for t in GRADED if t != task] == ["ok"] * 3  # the others are untouched


@pytest.mark.parametrize("clip,says", [
    # eps_low on both sides: at the defaults 1.2 against 1.28, between check_loss's two probes
    ("1 - eps_low, 1 + eps_low", "A > 0, 1 <= r < 1+eps_high: w = 0, grpo expects r"),
    ("0.8, 1.28", "A > 0, 1 <= r < 1+eps_high: w = 1.145, 0, grpo expects r"),  # typed in
])
def test_grpo_with_a_boundary_in_the_wrong_place_fails_at_the_spread_setting(capsys, tmp_path,
                                                                            clip, says):
    folder = solutions(tmp_path / "s")
    (folder / "my_grpo.py").write_text(
        LOSS_HEADER.format(name="my_grpo") + f"    clipped = r.clamp({clip})\n"
        "    ppo = torch.maximum(-advantages * r, -advantages * clipped)\n"
        "    per_token = torch.where(advantages < 0, torch.minimum(ppo, -advantages * c), ppo)\n"
        "    return (per_token * response_mask).sum() / response_mask.sum()\n")
    verdict, text = verdicts(run_check(capsys, 2, "--dir", folder)[1])[2]
    assert verdict == "FAIL" and "at eps_low 0.1, eps_high 0.5, c 4.0" in text and says in text


def test_advantages_without_the_epsilon_fail_on_the_dead_group(capsys, tmp_path):
    folder = solutions(tmp_path / "s")
    (folder / "advantages.py").write_text(
        "def group_advantages(rewards, use_std=True):\n"
        "    centered = rewards - rewards.mean(dim=1, keepdim=True)\n"
        "    return centered / rewards.std(dim=1, keepdim=True) if use_std else centered\n")
    verdict, text = verdicts(run_check(capsys, 1, "--dir", folder)[1])[1]
    assert verdict == "FAIL" and text.startswith("on groups whose rewards are all equal: rewards "
                                                 "[1, 1, 1, 1] got A = [nan, nan, nan, nan]")


def test_a_negative_dose_fails(capsys, tmp_path):
    folder = solutions(tmp_path / "s")
    source = DOSE.replace("{rung}", "nois").replace(  # the stale right tokens pushed down
        "for m, mask in parts)", "* (-1 if m == 'nois' else 1) for m, mask in parts)")
    (folder / "my_dose.py").write_text(source)
    verdict, text = verdicts(run_check(capsys, 5, "--dir", folder)[1])[5]
    assert verdict == "FAIL"
    assert "A > 0, r < 1/c: w = -1, -1, a dose must be finite and >= 0" in text


@pytest.mark.parametrize("task,file,source,says", [
    (1, None, None, "no such file"),
    (2, None, None, "no such file"),
    (1, "advantages.py", "def advantages(rewards, use_std=True):\n    return rewards\n",
     "has no function 'group_advantages'"),
    (1, "advantages.py", "def group_advantages(rewards, use_std=True):\n"
                         "    return rewards.flatten()\n", "shape (128,), not (P, G) = (16, 8)"),
    (1, "advantages.py", "def group_advantages(rewards, use_std=True):\n    return [0]\n",
     "returned list, not a tensor"),
    (1, "advantages.py", "def group_advantages(rewards, use_std=True):\n    return 1 / 0\n",
     "raised ZeroDivisionError: division by zero"),
    (3, "my_aspo.py", "def my_aspo(old_log_prob, log_prob, advantages, response_mask):\n"
                      "    return -(advantages * log_prob)\n", "not a scalar loss"),
    (5, "my_dose.py", "def my_dose(old_log_prob, log_prob, advantages, response_mask):\n"
                      "    return (old_log_prob * 0).sum()\n", "no gradient"),
    (2, "my_grpo.py", "def my_grpo(:\n", "importing"),
])
def test_bad_input_is_one_line_per_task(capsys, tmp_path, task, file, source, says):
    folder = tmp_path / "s"
    folder.mkdir()
    if file:
        (folder / file).write_text(source)
    rc, out, err = run_check(capsys, task, "--dir", folder)
    assert rc == 1 and err == "" and len(out) == 1, out
    verdict, text = verdicts(out)[task]
    assert verdict == "FAIL" and says in text, text


def _ratio(capsys, monkeypatch, tmp_path, *flags):
    _alternating_score(monkeypatch)  # every group half right: A != 0, so the policy moves
    args = [*TINY_ARGS, "--lr", "1e-2", "--out-dir", str(tmp_path / "r"), *flags]
    rc = ratio.main(args)
    return rc, capsys.readouterr()


def test_ratio_is_zero_on_the_first_update_on_policy_and_not_with_stale_rollouts(
        capsys, monkeypatch, tmp_path):
    _alternating_score(monkeypatch)
    args = [*ratio.DEFAULTS, *TINY_ARGS, "--rollout-lag", "0,2", "--steps", "4", "--lr", "1e-2",
            "--out-dir", str(tmp_path / "r")]
    status, calls = ratio.record_updates(args)
    mu = 4  # TINY_ARGS: 2 minibatches x 2 epochs
    assert status == 0 and len(calls) == 4 * mu and all(len(c) == 2 for c in calls)
    first = [calls[step * mu] for step in range(4)]  # update 1 of each step: (lag 0, lag 2)
    last = [calls[step * mu + mu - 1] for step in range(4)]
    assert all(lag0[0] < 1e-5 and lag0[1] == 0 for lag0, _ in first)  # on-policy: r = 1, no clip
    assert first[0][1][0] < 1e-5  # step 1 at lag 2: sampled by the start, which is the policy
    assert all(lag2[0] > 1e-3 for _, lag2 in first[1:])  # after that, stale from update 1 on
    assert all(lag0[0] > 1e-3 for lag0, _ in last)  # and the policy moves within a batch (mu > 1)
    assert na.ratio_metrics.__name__ == "ratio_metrics"  # the spy is gone


def test_ratio_prints_a_row_per_step(capsys, monkeypatch, tmp_path):
    rc, out = _ratio(capsys, monkeypatch, tmp_path, "--rollout-lag", "0,8", "--steps", "3")
    lines = out.out.splitlines()
    assert rc == 0 and out.err == "" and len(lines) == 1 + 3 + 3, lines
    assert "lag 0" in lines[1] and "lag 8" in lines[1] and "update 4" in lines[2]
    assert [line.split()[0] for line in lines[4:]] == ["1", "2", "3"]
    assert all(line.split()[2:4] == ["0.0000", "0.000"] for line in lines[4:])  # on-policy


@pytest.mark.parametrize("flags,says", [(["--methods", "grpo,aspo"], "one method and one seed"),
                                        (["--steps", "0"], "--steps must be at least 1"),
                                        (["--lr", "-1"], "--lr must be > 0")])
def test_ratio_bad_input_is_one_line(capsys, monkeypatch, tmp_path, flags, says):
    rc, out = _ratio(capsys, monkeypatch, tmp_path, *flags)
    err = out.err.strip().splitlines()
    assert rc == 2 and out.out == "" and len(err) == 1 and says in err[0], err


# --- every command of the worksheet and the answer key, at tiny settings -------------------------
def worksheet_commands():
    return [(doc.name, script, args) for doc in WORKSHEET
            for script, args in commands(doc.read_text())]


def tiny(args, out_dir) -> list[str]:
    """A nano_aspo.py command's arguments at TINY_ARGS' sizes, 2 steps, writing under out_dir:
    its own --methods, --seeds and --rollout-lag kept, every other TINY_ARGS flag forced."""
    keep = {"--methods", "--seeds", "--rollout-lag"}
    own = [a for i, a in enumerate(args) if a in keep or (i and args[i - 1] in keep)]
    forced = [a for i, a in enumerate(TINY_ARGS)
              if a not in keep and not (i and TINY_ARGS[i - 1] in keep)]
    return own + forced + ["--steps", "2", "--out-dir", str(out_dir)]


def test_the_worksheet_has_a_command_of_each_kind():
    scripts = [script for _, script, _ in worksheet_commands()]
    assert {"exercises/check.py", "exercises/ratio.py", "nano_aspo.py"} <= set(scripts), scripts
    # the user losses of tasks 3 and 5 are trained beside grpo and aspo
    specs = [a for _, s, args in worksheet_commands() for a in args if ".py:" in a]
    assert any("exercises/my_aspo.py:my_aspo" in a for a in specs)
    assert any("exercises/my_dose.py:my_dose" in a for a in specs)


@pytest.mark.parametrize("doc,script,args", worksheet_commands(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_worksheet_command_runs_at_tiny_settings(capsys, monkeypatch, tmp_path, doc, script,
                                                 args):
    folder = solutions(tmp_path / "solutions")
    # the worksheet's paths to the student's files, pointed at the solutions
    args = [str(a).replace("exercises/", f"{folder}/") if ".py:" in a else a for a in args]
    if script == "exercises/check.py":
        assert check.main(args + ["--dir", str(folder)]) == 0
        return
    if script == "integrations/check_loss.py":
        from integrations import check_loss
        assert check_loss.main(args) == 0
        return
    _alternating_score(monkeypatch)  # both signs of A, so every loss has weights to apply
    if script == "exercises/ratio.py":
        assert ratio.main(tiny(args, tmp_path / "out")) == 0
        assert "update 4" in capsys.readouterr().out
        return
    assert script == "nano_aspo.py", f"{doc}: no tiny setting for {script}: add one here"
    assert na.main(tiny(args, tmp_path / "out")) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    methods = [m for i, a in enumerate(args) if args[i - 1] == "--methods" for m in a.split(",")]
    assert {r["method"] for r in summary["runs"]} == set(methods)
    assert all("error" not in r and r["final"] for r in summary["runs"])

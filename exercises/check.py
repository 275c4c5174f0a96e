"""Check the exercises of exercises/README.md: one line per task, exit 0 when every task checked
passes, 1 otherwise (2: a bad flag).

    python exercises/check.py                          # every task, one line each
    python exercises/check.py 3                        # one task, with its per-branch table
    python exercises/check.py --dir submissions/alice  # a student's copies of the starter files

Task 1 is compared with nano_aspo.group_advantages on random and edge-case rewards; the losses of
tasks 2, 3 and 5 are weighed by integrations/check_loss.py (the weight view of ASPO.md §3: the
per-token weight w(r, sign A) measured by autograd in every branch), against grpo, aspo, and grpo
outside the stale right tokens. Task 4 has nothing to grade: exercises/ratio.py measures it.
"""
import argparse
import math
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: nano_aspo.py and integrations/
import nano_aspo as na  # noqa: E402
from integrations import check_loss  # noqa: E402
from integrations.user_loss import load_function, one_line  # noqa: E402

DEFAULTS = na.Config()
CLIP = {"eps_low": DEFAULTS.eps_low, "eps_high": DEFAULTS.eps_high, "clip_c": DEFAULTS.clip_c}
# a second setting, the losses' boundaries far apart: check_loss probes each range at two interior
# points, which at the defaults miss a clip at 1 + eps_low where 1 + eps_high belongs (1.2 against
# 1.28, §4's clip-higher) and constants written into the loss instead of read from config
WIDE = {"eps_low": 0.1, "eps_high": 0.5, "clip_c": 4.0}
SPREAD = ("the boundaries far apart: is each of eps_low, eps_high and c read from config, and "
          "used where it belongs?")
# task: (title, starter file, function)
TASKS = {1: ("group advantages", "advantages.py", "group_advantages"),
         2: ("GRPO's clipped loss", "my_grpo.py", "my_grpo"),
         3: ("ASPO's flip", "my_aspo.py", "my_aspo"),
         4: ("why the ratio is 1", None, None),
         5: ("your dose", "my_dose.py", "my_dose")}


def advantage_cases():
    """(name, rewards (P, G), use_std, what it tests) of task 1 (ASPO.md §1), general ones first."""
    gen = torch.Generator().manual_seed(0)
    binary = torch.randint(0, 2, (16, 8), generator=gen).float()
    binary[:, :2] = torch.tensor([0.0, 1.0])  # no dead group here: that is a case of its own
    real = torch.rand(4, 5, generator=gen)
    return [("random 0/1 rewards, 16 groups of 8", binary, True,
             "per group (row): (R - mean R) / (std R + 1e-6), std the sample std"),
            ("the same with use_std=False", binary, False, "Dr. GRPO: R - mean R, no division"),
            ("real-valued rewards, 4 groups of 5", real, True, "any reward, not only 0/1"),
            ("groups whose rewards are all equal", torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]),
             True, "std 0: A must be 0 (a dead group), not nan; the 1e-6 is there for that"),
            ("G = 2", torch.tensor([[0.0, 1], [1, 1], [1, 0]]), True,
             "the sample std of (0, 1) is 0.707 (torch.std's default), not 0.5")]


def numbers(x) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in x.tolist()) + "]"


def check_advantages(spec: str, verbose: bool) -> tuple[bool, str]:
    """Task 1: the function against nano_aspo.group_advantages on every case."""
    fn, failed, cases = load_function(spec), [], advantage_cases()  # failed: (name, its line)
    for name, rewards, use_std, why in cases:
        try:
            got = fn(rewards.clone(), use_std)
        except Exception as e:
            return False, f"{spec} raised {one_line(e)}"
        want = na.group_advantages(rewards, use_std)
        if not isinstance(got, torch.Tensor):
            return False, f"on {name}: it returned {type(got).__name__}, not a tensor"
        if got.shape != want.shape:
            return False, (f"on {name}: it returned shape {tuple(got.shape)}, not (P, G) = "
                           f"{tuple(want.shape)}")
        bad = ~torch.isclose(got.double(), want.double(), rtol=1e-4, atol=1e-4)
        if bad.any():
            row = bad.any(dim=1).nonzero()[0].item()
            failed.append((name, f"on {name}: rewards {numbers(rewards[row])} got A = "
                                 f"{numbers(got[row])}, expected {numbers(want[row])} ({why})"))
        if verbose:
            print(f"  FAIL {failed[-1][1]}" if bad.any() else f"  ok: {name}")
    if failed:
        also = f"; also wrong on: {', '.join(name for name, _ in failed[1:])}" if failed[1:] else ""
        return False, failed[0][1] + also
    return True, f"matches nano_aspo.group_advantages on all {len(cases)} cases"


def setting(clip: dict) -> str:
    return f"eps_low {clip['eps_low']}, eps_high {clip['eps_high']}, c {clip['clip_c']}"


def check_against(spec: str, reference: str, verbose: bool) -> tuple[bool, str]:
    """Tasks 2 and 3: check_loss against the reference at both settings; a mismatch names its
    branch (the default setting's table is printed in verbose mode)."""
    for clip in (CLIP, WIDE):
        measured, _, lines, mismatches = check_loss.check(spec, reference, clip)
        if verbose and (clip is CLIP or mismatches):
            print("\n".join((lines if clip is CLIP else lines[:1])
                            + [f"  MISMATCH {line}" for line in mismatches]))
        if mismatches:
            where = "" if clip is CLIP else f" at {setting(clip)} ({SPREAD})"
            more = f" (+{len(mismatches) - 2} more)" if len(mismatches) > 2 else ""
            return False, (f"{len(mismatches)} of {len(measured)} branches differ from {reference}"
                           f"{where}: " + "; ".join(mismatches[:2]) + more)
    return True, (f"all {len(measured)} branches match {reference} at two clip settings (the "
                  "weight view, ASPO.md §3)")


def stale_right(branch) -> bool:
    """The branches of task 5's dose: A > 0 and the probed token's ratio below 1 (§12)."""
    return branch.sign > 0 and all(p[branch.token].item() < 1 for p in branch.probes)


def dose_table(spec: str, clip: dict) -> tuple[list[str], list[str]]:
    """Task 5 at one setting: (the dose's lines, one per branch with A > 0 and r < 1; the lines of
    the other branches where the weight is not grpo's)."""
    measured, tables, _, _ = check_loss.check(spec, "grpo", clip)
    c, dose, wrong = clip["clip_c"], [], []
    for (branch, ws), (_, ref) in zip(measured, tables["grpo"]):
        got = check_loss.formula(branch, ws, c)
        if stale_right(branch):
            dose.append(f"{branch.name.removeprefix('A > 0, ')}: w = {got}")
            if not all(math.isfinite(w) and w >= 0 for w in ws):
                wrong.append(f"{branch.name}: w = {got}, a dose must be finite and >= 0 (a "
                             "negative weight pushes a right token down)")
        elif max(abs(w - x) if math.isfinite(w) else math.inf for w, x in zip(ws, ref)) > 1e-4:
            wrong.append(f"{branch.name}: w = {got}, grpo expects "
                         f"{check_loss.formula(branch, ref, c)}")
    return dose, wrong


def check_dose(spec: str, verbose: bool) -> tuple[bool, str]:
    """Task 5: grpo's weight in every branch but A > 0, r < 1, where any finite w >= 0 goes."""
    for clip in (CLIP, WIDE):
        dose, wrong = dose_table(spec, clip)
        if verbose and (clip is CLIP or wrong):
            print(f"{spec} at {setting(clip)}: the weight w of a right token whose probability "
                  "fell (A > 0, r < 1), then any other branch where it is not grpo's")
            for line in dose + [f"MISMATCH {line}" for line in wrong]:
                print(f"  {line}")
        if wrong:
            where = "" if clip is CLIP else f"at {setting(clip)} ({SPREAD}): "
            return False, where + "; ".join(wrong)
        if clip is CLIP:
            first = dose
    same = (" (GRPO's own r: your arm will repeat grpo's)"
            if all(line.endswith("w = r") for line in first) else "")
    n = len(check_loss.branches(**CLIP))
    return True, (f"grpo's weight in the other {n - len(first)} branches; your dose for A > 0, "
                  "r < 1: " + "; ".join(first) + same)


def check_task(task: int, folder: Path, verbose: bool) -> tuple[bool | None, str]:
    """(passed, the verdict's text); passed is None for task 4, which has nothing to grade."""
    _, file, function = TASKS[task]
    if file is None:
        return None, "nothing to grade: predict, then run python exercises/ratio.py (README)"
    path = folder / file
    short = os.path.relpath(path)  # as the student would type it, from the repository
    spec = f"{path if short.startswith('..') else short}:{function}"
    try:
        if task == 1:
            return check_advantages(spec, verbose)
        if task == 5:
            return check_dose(spec, verbose)
        return check_against(spec, "grpo" if task == 2 else "aspo", verbose)
    except Exception as e:  # bad input is one line, whatever the student's file does
        return False, str(e) if isinstance(e, ValueError) else one_line(e)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", nargs="?", type=int, choices=sorted(TASKS),
                   help="the task to check, with its details (default: every task, one line each)")
    p.add_argument("--dir", default=str(HERE),
                   help="the folder with the files to check (advantages.py, my_grpo.py, ...)")
    a = p.parse_args(argv)
    folder, ok = Path(a.dir), True
    for task in [a.task] if a.task else sorted(TASKS):
        passed, text = check_task(task, folder, verbose=a.task is not None)
        verdict = {True: "ok", False: "FAIL", None: "--"}[passed]
        print(f"task {task} ({TASKS[task][0]}): {verdict}: {text}")
        ok = ok and passed is not False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

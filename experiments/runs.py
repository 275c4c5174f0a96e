"""The experiments behind README's figures and tables: one command per suite, resumable (a run that
finished with the same flags is skipped), several single-threaded processes at once (two use a 2-core
CPU best).

    python experiments/runs.py start       # the start band: 3 pretraining seeds x 1 and 2 CPU threads, --steps 0
    python experiments/runs.py tradeoff    # grpo and aspo at lr0, lr0/2, lr0/4 on seeds 0-7: assets/tradeoff.png, paired table
    python experiments/runs.py ladder      # nois, posmean, aspo-hardneg at lr0 on seeds 0-7 (grpo, aspo: from tradeoff)
    python experiments/runs.py all         # the three, then the report
    python experiments/runs.py lockin --seeds 0,...,31   # phase 6: grpo vs aspo-ref and the controls, lock-in regime
    python experiments/runs.py stale --seeds 0,...,31 --lags 0,8   # phase 7: stale rollouts
    python experiments/runs.py dose --seeds 0,...,15   # phase 8: the dose ladder, every rung at lag 8 (sampler anchor)
    python experiments/runs.py dose-controls --seeds 0,...,7   # phase 8's controls: on-policy, and the decoupled anchor
    python experiments/runs.py map --third posmean   # phase 9: the map, grpo, aspo and a third rung per cell (seeds 0-15)
    python experiments/runs.py report      # the tables of whatever has finished (also written to <root>/report.md)
    python experiments/runs.py tradeoff --seeds 100,101 --root experiments/runs-dev -- --steps 50   # dev seeds, any nano_aspo flag after --

Every learning rate of a suite is one `python nano_aspo.py --quiet --seeds S,... --methods M,... --lr LR --out-dir
<root>/<suite>/lr<LR>`, which trains its runs side by side as one batched model, from one shared pretrained
checkpoint (<root>/ckpt), so the methods are paired: same start, same prompts and evaluation draws per
seed (§10). (The reported runs of phase 4 were one process per run, in <suite>/<method>@<lr>/s<seed>/;
the report reads both.) How the results are judged is written in experiments/README.md.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the repository: nano_aspo.py and its modules
sys.path.insert(0, str(ROOT))

import nano_aspo as na  # noqa: E402
from experiments.results import label_order, load_suite  # noqa: E402
import pretrain  # noqa: E402
from experiments.start_probe import teacher_accuracy  # noqa: E402
from experiments.stats import TEACHER_TOLERANCE, frontier_gap, teacher_gaps  # noqa: E402
from stats import escaped, forgot, lockin_share, paired_comparison, paired_line, paired_lockin, t_interval  # noqa: E402

LR_FRACTIONS = (1, 2, 4)  # the same learning-rate sweep for every method: lr0, lr0/2, lr0/4 (§6)
LADDER = ("nois", "posmean", "aspo-hardneg")  # the paper's ablation ladder (§9), beside grpo and aspo
START_SEEDS = (1234, 1, 2)  # pretraining seeds of the start band (1234 is the default)


# --- running ---------------------------------------------------------------------------------------------
def finished(out: Path, argv: list[str]) -> bool:
    """A run is done if it finished with exactly these flags (out/argv.json) and the pretraining settings
    they mean now, so a changed setting reruns it, and so does a changed default of the pretraining."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        same = json.loads((out / "argv.json").read_text()) == argv
        cfg = na.parse_config(argv)
        same = same and all(summary["config"].get(f) == getattr(cfg, f) for f in pretrain.PRETRAIN_FIELDS)
    except (OSError, ValueError, KeyError):
        return False
    return same and "start" in summary and all(r.get("final") for r in summary["runs"])


def run_one(argv: list[str], out: Path, threads: int = 1, script: tuple = ("nano_aspo.py",)) -> str:
    """One process of `script` (nano_aspo.py) writing to `out` (skipped if it has finished); its console goes
    to out/log.txt."""
    if finished(out, argv):
        return f"skip {out}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "argv.json").write_text(json.dumps(argv))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    with open(out / "log.txt", "w") as log:
        rc = subprocess.run([sys.executable, str(ROOT / script[0]), *script[1:], "--quiet",
                             "--out-dir", str(out), *argv], stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    status = "done" if rc == 0 else f"FAILED (exit {rc}, see {out / 'log.txt'})"
    return f"{status} {out} in {time.time() - t0:.0f}s"


def run_all(jobs: list[tuple[list[str], Path, int]], parallel: int):
    with ThreadPoolExecutor(parallel) as pool:
        for line in pool.map(lambda j: run_one(*j), jobs):
            print(line, flush=True)


# the suites of phases 4-6 are on-policy: the demo's default lags (0 and 8) would add stale runs
ON_POLICY = ["--rollout-lag", "0"]


def rl_jobs(suite: str, methods, fractions, lr0: float, args, extra) -> list:
    """One process per learning rate, training all its (method, seed) runs as one batched model
    (nano_aspo.py's batched path), into <root>/<suite>/lr<lr>/."""
    ckpt = args.root / "ckpt"
    # pretrain once before the parallel runs, so they all load the same checkpoint
    # (the suite's own flags come last: they win over the same flags after --)
    run_all([([*extra, "--steps", "0", "--ckpt-dir", str(ckpt)], args.root / "ckpt-start", 1)], 1)
    seeds = ",".join(map(str, args.seeds))
    return [([*extra, *ON_POLICY, "--seeds", seeds, "--methods", ",".join(methods), "--ckpt-dir", str(ckpt),
              "--lr", f"{lr0 / f:g}"],
             args.root / suite / f"lr{lr0 / f:g}", 1) for f in fractions]


def start_jobs(args, extra, threads: int) -> list:
    # 64 samples per held-out problem: the evaluation's own noise well below the band's 0.05 (phase 5)
    # the start's strategy and teacher accuracies: experiments/start_probe.py --summary
    return [(["--eval-samples", "64", *extra, "--pretrain-seed", str(seed), "--ckpt-dir",
              str(args.root / "start" / f"p{seed}-t{threads}")], args.root / "start" / f"p{seed}-t{threads}", threads,
             ("experiments/start_probe.py", "--summary")) for seed in START_SEEDS]


# --- the report ------------------------------------------------------------------------------------------
SPREAD = 0.05  # pass@k, hard pass@k and careful accuracy on hard problems: max - min over the starts (phase 5)


def report_start(root: Path) -> list[str]:
    """The start band table and its verdicts (experiments/README.md phase 5): each start's strategies
    within TEACHER_TOLERANCE of the teacher, the starts within SPREAD of each other in what the RL
    experiments depend on, the careful share 0.1 +- 0.02, and the old band."""
    rows, old = [], []
    for seed in START_SEEDS:
        for t in (1, 2):
            path = root / "start" / f"p{seed}-t{t}" / "summary.json"
            if path.exists():
                summary = json.loads(path.read_text())
                s = summary["start"]
                if "careful_acc_hard" not in s:  # written before the strategy accuracies: rerun it
                    old.append(str(path.parent))
                    continue
                if "teacher" not in s:  # a start written before the teacher's values were stored
                    cfg = na.Config(**{key: v for key, v in summary["config"].items() if key in na.Config.__dataclass_fields__})
                    s["teacher"] = teacher_accuracy(na.task_problems(cfg, "test"), cfg)
                rows.append((seed, t, s))
    if not rows:
        return [f"Starts without strategy accuracies (rerun them): {', '.join(old)}"] if old else []
    k, n = rows[0][2]["k"], rows[0][2]["n_problems"]
    lines = [f"### The start (held-out, {n} problems, `python experiments/runs.py start`)", "",
             f"| pretrain seed | threads | pass@1 | pass@{k} | hard pass@{k} | entropy | careful share (hard) | "
             "careful right, easy / hard | shortcut right, easy / hard | largest gap to the teacher |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    converged = []
    for seed, t, s in rows:
        gaps = teacher_gaps(s, s["teacher"])
        worst = max(gaps, key=lambda key: abs(gaps[key]))
        converged.append(abs(gaps[worst]) <= TEACHER_TOLERANCE)
        lines.append(f"| {seed} | {t} | {s['pass@1']:.3f} +- {s['pass@1_se']:.3f} | {s['pass@k']:.3f} +- "
                     f"{s['pass@k_se']:.3f} | {s['hard_pass@k']:.3f} | {s['entropy']:.3f} | {s['careful_hard']:.3f} | "
                     f"{s['careful_acc_easy']:.3f} / {s['careful_acc_hard']:.3f} | "
                     f"{s['shortcut_acc_easy']:.3f} / {s['shortcut_acc_hard']:.3f} | {gaps[worst]:+.3f} ({worst}) |")
    teacher = rows[0][2]["teacher"]
    spreads = {key: max(s[key] for *_, s in rows) - min(s[key] for *_, s in rows)
               for key in ("pass@1", "pass@k", "hard_pass@k", "careful_acc_hard")}
    band = all(0.2 <= s["pass@1"] <= 0.7 and s["pass@k"] - s["pass@1"] >= 0.15 and s["pass@k"] <= 0.85 for *_, s in rows)
    share = all(abs(s["careful_hard"] - 0.1) <= 0.02 for *_, s in rows)
    ok = lambda x: "holds" if x else "FAILS"
    lines += ["", f"The teacher's own accuracy: careful {teacher['careful_acc_easy']:.3f} / {teacher['careful_acc_hard']:.3f}, "
                  f"shortcut {teacher['shortcut_acc_easy']:.3f} / {teacher['shortcut_acc_hard']:.3f} (easy / hard).",
              f"- every strategy within {TEACHER_TOLERANCE} of the teacher: {ok(all(converged))} "
              f"({sum(converged)} of {len(rows)} starts)",
              f"- spread over the {len(rows)} starts (max - min <= {SPREAD}): " +
              ", ".join(f"{key.replace('pass@k', f'pass@{k}')} {v:.3f}" for key, v in spreads.items() if key != "pass@1") +
              f": {ok(all(v <= SPREAD for key, v in spreads.items() if key != 'pass@1'))}",
              f"- careful share on hard problems 0.1 +- 0.02: {ok(share)}",
              f"- the old band (pass@1 in [0.2, 0.7], pass@{k} - pass@1 >= 0.15, pass@{k} <= 0.85): {ok(band)}; "
              f"pass@1 spread {spreads['pass@1']:.3f} ({'within' if spreads['pass@1'] <= 0.06 else 'NOT within'} 0.06)"]
    if old:
        lines.append(f"- not in the table, written before the strategy accuracies (rerun them): {', '.join(old)}")
    return lines


def report_rl(root: Path, suite: str, lr0: float) -> list[str]:
    runs = load_suite(root / suite)
    if not runs:
        return []
    if suite == "ladder":
        runs += [r for r in load_suite(root / "tradeoff") if r["method"] in (f"grpo@{lr0:g}", f"aspo@{lr0:g}")]
    k = runs[0]["k"]
    labels = sorted({r["method"] for r in runs}, key=label_order)
    keys = [key for key in ("pass@1", "pass@k", "entropy", "hard_pass@1", "hard_pass@k", "careful_hard",
                            "distinct_correct") if key in runs[0]["final"]]
    lines = [f"### {suite} (`python experiments/runs.py {suite}`): final held-out metrics, mean over seeds", "",
             "| run | seeds | " + " | ".join(key.replace("pass@k", f"pass@{k}") for key in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for label in labels:
        rs = [r for r in runs if r["method"] == label]
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(f"{np.mean([r['final'][key] for r in rs]):.3f}"
                                                              for key in keys) + " |")
    lines += ["", "Paired differences (final held-out; mean, 95% bootstrap interval over seeds, seeds in favour):", ""]
    grpo = [label for label in labels if label.startswith("grpo@")]
    pairs = ([(label, f"grpo@{lr0:g}") for label in labels if label != f"grpo@{lr0:g}" and label.split("@")[1] == f"{lr0:g}"]
             if suite == "ladder" else
             [(f"aspo@{lr0 / f:g}", f"grpo@{lr0 / f:g}") for f in LR_FRACTIONS] +
             [(f"aspo@{lr0:g}", g) for g in grpo if g != f"grpo@{lr0:g}"])
    for method, base in pairs:
        for c in paired_comparison([r for r in runs if r["method"] in (method, base)], baseline=base):
            if c["metric"] in ("pass@1", "pass@k", "entropy", "hard_pass@k", "careful_hard"):
                lines.append(f"- {paired_line(c, k)}")
    if suite == "tradeoff" and grpo:
        aspo = [label.replace("grpo@", "aspo@") for label in grpo]
        lines += ["", "The pace-free test (§6), per seed: mean over a grid of held-out entropy of the left side's "
                      "frontier (its best held-out pass@1 at equal or higher entropy) minus the right side's:", ""]
        for left in [[a] for a in aspo] + [aspo]:
            lines.append(f"- {paired_line(frontier_gap(runs, left, grpo), k)}")
        lines.append(f"- the same frontiers on the axis pass@{k} against pass@1 (pass@{k} at equal pass@1): "
                     f"{paired_line(frontier_gap(runs, aspo, grpo, x='eval_pass@1', y=f'eval_pass@{k}'), k, label=False)}")
    return lines


LOCKIN_FLAGS = ["--eps-high", "0.2", "--easy-share", "0.99", *ON_POLICY]  # the lock-in regime (phase 6)
LOCKIN_CONTROLS = {"kl005": ["--kl-coef", "0.05"], "lr5e-5": ["--lr", "5e-5"]}  # positive controls, on grpo


def lockin_jobs(args, extra) -> list:
    """The lock-in comparison (phase 6): grpo and aspo-ref as one batched process, and each positive
    control (grpo with one more flag) as another, on the same seeds and checkpoint."""
    ckpt, seeds = args.root / "ckpt", ",".join(map(str, args.seeds))
    run_all([([*extra, *LOCKIN_FLAGS, "--steps", "0", "--ckpt-dir", str(ckpt)], args.root / "ckpt-start", 1)], 1)
    base = [*extra, *LOCKIN_FLAGS, "--seeds", seeds, "--ckpt-dir", str(ckpt)]
    return ([([*base, "--methods", "grpo,aspo-ref"], args.root / "lockin" / "grpo-aspo-ref", 1)] +
            [([*base, "--methods", "grpo", *flags], args.root / "lockin" / f"grpo-{name}", 1)
             for name, flags in LOCKIN_CONTROLS.items()])


def report_lockin(root: Path) -> list[str]:
    """Lock-in per arm (Wilson) and against the paired grpo runs (exact McNemar), with the continuous
    endpoints' paired t intervals: the table of experiments/README.md phase 6."""
    arms = {}
    for path in sorted((root / "lockin").glob("*/summary.json")):
        summary = json.loads(path.read_text())
        for run in summary["runs"]:
            name = run["method"] if path.parent.name == "grpo-aspo-ref" else path.parent.name
            arms.setdefault(name, []).append(dict(run, method=name))
    if "grpo" not in arms:
        return []
    n = len(arms["grpo"])
    lines = [f"### lock-in (`python experiments/runs.py lockin`): {n} paired seeds, final held-out", "",
             "| arm | locked in (95% Wilson) | vs grpo: only arm / only grpo, exact McNemar p | hard pass@8 - grpo (t 95%) | "
             "pass@1 - grpo (t 95%) |", "|---|---|---|---|---|"]
    for name, runs_ in arms.items():
        share = lockin_share(runs_, name)
        row = f"| {name} | {share['locked']}/{share['n']} = {share['share']:.2f} [{share['wilson95'][0]:.2f}, {share['wilson95'][1]:.2f}] |"
        if name == "grpo":
            lines.append(row + " | | |")
            continue
        both = runs_ + arms["grpo"]
        c = paired_lockin(both, name)
        diffs = {x["metric"]: x["diffs"] for x in paired_comparison(both)}
        cells = []
        for metric in ("hard_pass@k", "pass@1"):
            lo, hi = t_interval(diffs[metric])
            cells.append(f"{np.mean(diffs[metric]):+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(row + f" {c['b']} / {c['c']}, p = {c['p']:.3f} | {cells[0]} | {cells[1]} |")
    return lines


# --- phase 7: stale rollouts (ASPO.md §12) -----------------------------------------------------
STALE_CHUNK = 8  # seeds per process: an interruption loses one chunk, finished chunks are skipped
STALE_ENDPOINTS = ("careful_hard", "hard_pass@k", "pass@k", "pass@1")


def stale_jobs(args, extra) -> list:
    """grpo and aspo at every lag of --lags under every anchor of --anchors: one batched process
    per (anchor, chunk of STALE_CHUNK seeds), into <root>/stale/<anchor>-L<lags>/s<first>-<last>.
    Lag 0 is on-policy, the same run under both anchors: it runs under the sampler anchor only."""
    jobs = []
    for anchor in args.anchors:
        lags = [lag for lag in args.lags if lag > 0 or anchor == "sampler"]
        for i in range(0, len(args.seeds), STALE_CHUNK) if lags else []:
            seeds = args.seeds[i:i + STALE_CHUNK]
            out = (args.root / "stale" / f"{anchor}-L{'-'.join(map(str, lags))}"
                   / f"s{seeds[0]}-{seeds[-1]}")
            jobs.append(([*extra, "--seeds", ",".join(map(str, seeds)), "--methods", "grpo,aspo",
                          "--rollout-lag", ",".join(map(str, lags)), "--ratio-anchor", anchor],
                         out, 1))
    return jobs


def stale_arms(root: Path) -> dict:
    """{(anchor, lag, mu): {(method, seed): run}} of every finished run under <root>/stale; lag 0
    has the anchor "on-policy"."""
    arms = {}
    for path in sorted((root / "stale").glob("*/*/summary.json")):
        summary = json.loads(path.read_text())
        cfg = summary["config"]
        for run in summary["runs"]:
            if run.get("final"):
                anchor = cfg["ratio_anchor"] if run["lag"] else "on-policy"
                mu = cfg["minibatches"] * cfg["epochs"]
                arms.setdefault((anchor, run["lag"], mu), {})[run["method"], run["seed"]] = run
    return arms


def report_stale(root: Path) -> list[str]:
    """Phase 7's table: per anchor, lag and mu, the staleness (drift, ESS), the stale positive
    tokens (share with r < 0.8, the weights grpo and aspo give them), each method's primary
    endpoint, aspo - grpo on every endpoint (paired t interval, seeds in favour), and the outcome
    "escaped" per seed (Wilson shares, exact McNemar on the discordant seeds)."""
    arms = stale_arms(root)
    if not arms:
        return []
    lines = ["### stale rollouts (`python experiments/runs.py stale`): final held-out, aspo - grpo "
             "paired by seed (mean [95% t interval] seeds in favour)", "",
             "| anchor | lag | mu | seeds | drift | ESS | r < 0.8 (pos) | w grpo / aspo | careful "
             "(hard) grpo / aspo | " + " | ".join(f"{e.replace('pass@k', 'pass@8')} aspo - grpo"
                                                  for e in STALE_ENDPOINTS)
             + " | escaped grpo / aspo (Wilson) | McNemar b / c, p |",
             "|" + "---|" * (10 + len(STALE_ENDPOINTS))]
    order = {"on-policy": 0, "sampler": 1, "decoupled": 2}
    for (anchor, lag, mu), by in sorted(arms.items(), key=lambda a: (a[0][2], a[0][1],
                                                                     order[a[0][0]])):
        seeds = sorted(s for (m, s) in by if m == "aspo" and ("grpo", s) in by)
        if not seeds:
            continue
        runs_ = [by[m, s] for s in seeds for m in ("grpo", "aspo")]
        mech = {key: np.mean([r["stale"][key] for r in runs_ if r["stale"].get(key) is not None]
                             or [np.nan]) for key in ("drift", "ess", "below08_pos",
                                                      "w_grpo_below08_pos", "w_aspo_below08_pos")}
        cells = [paired_cell(by, "aspo", "grpo", e)[0] for e in STALE_ENDPOINTS]
        share = {m: lockin_share(runs_, m, escaped) for m in ("grpo", "aspo")}
        c = paired_lockin(runs_, "aspo", "grpo", escaped)
        careful = " / ".join(f"{np.mean([by[m, s]['final']['careful_hard'] for s in seeds]):.3f}"
                             for m in ("grpo", "aspo"))
        lines.append(f"| {anchor} | {lag} | {mu} | {len(seeds)} | {mech['drift']:.4f} | "
                     f"{mech['ess']:.3f} | {mech['below08_pos']:.3f} | "
                     f"{mech['w_grpo_below08_pos']:.2f} / {mech['w_aspo_below08_pos']:.2f} | "
                     f"{careful} | " + " | ".join(cells) + " | "
                     + " / ".join(f"{o['locked']}/{o['n']} [{o['wilson95'][0]:.2f}, "
                                  f"{o['wilson95'][1]:.2f}]" for o in share.values())
                     + f" | {c['b']} / {c['c']}, p = {c['p']:.3f} |")
    return lines


# --- phase 8: the dose ladder (ASPO.md §13) -------------------------------------------------------
# the rungs, by the weight they give a stale right token (r < 1, A > 0): icepop 0 (below 0.5), grpo,
# cispo, m2po r (or 0), cispo-verl 0.8, nois 1, posmean the completion's mean r, aspo 1/r, and the
# two halves of aspo's flip
DOSE_RUNGS = ("grpo", "aspo", "nois", "posmean", "aspo-fall", "aspo-rise", "cispo", "cispo-verl",
              "icepop", "m2po")
NEW_RUNGS = ("aspo-fall", "aspo-rise", "cispo", "cispo-verl", "icepop", "m2po")  # of phase 8
DOSE_ARMS = {  # arm -> (its rungs, its nano_aspo flags); one batched process per 8 seeds
    "ladder": (DOSE_RUNGS, ["--rollout-lag", "8", "--ratio-anchor", "sampler"]),
    "on-policy": (("grpo",) + NEW_RUNGS, ["--rollout-lag", "0"]),
    "decoupled": (("grpo", "aspo", "aspo-fall", "aspo-rise"),
                  ["--rollout-lag", "8", "--ratio-anchor", "decoupled"]),
}


def dose_jobs(args, extra, arms) -> list:
    """One batched process per (arm, chunk of --chunk seeds) into <root>/dose/<arm>/s<first>-<last>,
    every rung of the arm in it (so each rung is paired with grpo and aspo by seed and process);
    --rungs narrows an arm to some of its rungs (phase 8's extension), into <arm>-<rungs>/."""
    jobs = []
    for arm in arms:
        rungs, flags = DOSE_ARMS[arm]
        rungs = [r for r in rungs if not args.rungs or r in args.rungs]
        name = arm if len(rungs) == len(DOSE_ARMS[arm][0]) else f"{arm}-{'-'.join(rungs)}"
        for i in range(0, len(args.seeds), args.chunk):
            seeds = args.seeds[i:i + args.chunk]
            jobs.append(([*extra, "--seeds", ",".join(map(str, seeds)), "--methods", ",".join(rungs),
                          "--max-members", str(len(rungs) * len(seeds)), *flags],
                         args.root / "dose" / name / f"s{seeds[0]}-{seeds[-1]}", 1))
    return jobs


PEERS = ("cispo", "cispo-verl", "icepop", "m2po")
# phase 8b's named contrasts on the primary endpoint, (left, right): left - right, paired by seed
DOSE_CONTRASTS = ([("aspo", "nois"), ("aspo-fall", "grpo"), ("aspo-rise", "grpo")]
                  + [(p, "grpo") for p in PEERS] + [("aspo", p) for p in PEERS]
                  + [("nois", "grpo"), ("posmean", "grpo")])
EXTEND_AT = 0.03  # phase 8b's two-stage rule: |mean| >= this with an interval that includes 0


def dose_arms(root: Path) -> dict:
    """{arm: {(method, seed): run}} of every finished run under <root>/dose, an arm's extension
    (<arm>-<rungs>/) pooled with the arm."""
    arms = {}
    for path in sorted((root / "dose").glob("*/*/summary.json")):
        name = path.parent.parent.name
        arm = max((a for a in DOSE_ARMS if name == a or name.startswith(a + "-")), key=len)
        for run in json.loads(path.read_text())["runs"]:
            if run.get("final"):
                arms.setdefault(arm, {})[run["method"], run["seed"]] = run
    return arms


def paired_cell(by: dict, left: str, right: str, key: str) -> tuple[str, np.ndarray]:
    """left - right on one endpoint over the seeds both finished: "mean [t 95%] in favour/n"."""
    seeds = sorted(s for (m, s) in by if m == left and (right, s) in by)
    d = np.array([by[left, s]["final"][key] - by[right, s]["final"][key] for s in seeds])
    if not len(d):
        return "", d
    ci = t_interval(d)
    return (f"{d.mean():+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            + f" {int((d > 0).sum())}/{len(d)}"), d


def dose_verdict(d: np.ndarray, first_stage: bool = True) -> str:
    """Phase 8b's reading of one named contrast's paired differences (the two-stage rule: the first
    stage's 16 seeds, 0-15, may send it to seeds 16-31)."""
    ci = t_interval(d)
    return ("distinguishable from 0" if ci and (ci[0] > 0 or ci[1] < 0) else
            "extend to seeds 16-31" if first_stage and len(d) == 16 and abs(d.mean()) >= EXTEND_AT else
            "within noise")


def seed_counts(by: dict, rungs) -> str:
    """The fewest and the most seeds a rung of an arm finished: "16", or "16-32" where phase 8's
    extension ran some rungs on seeds 16-31 as well."""
    counts = sorted({len({s for m, s in by if m == r}) for r in rungs})
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def report_dose(root: Path) -> list[str]:
    """Phase 8's tables: per arm and rung the final endpoints and rung - grpo (paired t), the outcomes
    (Wilson, exact McNemar against grpo and aspo) and the mechanism (the positive tokens' ratio
    shares and the weight the rung gives the stale ones, measured); then 8b's named contrasts with
    the two-stage rule's verdict."""
    lines = []
    for arm, by in dose_arms(root).items():
        rungs = [r for r in DOSE_RUNGS if any(m == r for m, _ in by)]
        lines += [f"### dose ladder, {arm} (`python experiments/runs.py "
                  f"{'dose' if arm == 'ladder' else 'dose-controls'}`): final held-out, {seed_counts(by, rungs)} seeds; "
                  "rung - grpo paired by seed (mean [95% t] seeds in favour)", "",
                  "| rung | careful (hard) | " + " | ".join(f"{e.replace('pass@k', 'pass@8')} - grpo"
                                                          for e in STALE_ENDPOINTS + ("entropy",))
                  + " | forgot (Wilson) | escaped (Wilson) | McNemar forgot vs grpo / vs aspo |",
                  "|" + "---|" * 10]
        runs_ = list(by.values())
        for rung in rungs:
            mine = [r for r in runs_ if r["method"] == rung]
            cells = [paired_cell(by, rung, "grpo", e)[0] if rung != "grpo" else ""
                     for e in STALE_ENDPOINTS + ("entropy",)]
            shares = [lockin_share(runs_, rung, flag) for flag in (forgot, escaped)]
            tests = [paired_lockin(runs_, rung, base, forgot) for base in ("grpo", "aspo")
                     if base != rung and any(m == base for m, _ in by)]
            lines.append(f"| {rung} | {np.mean([r['final']['careful_hard'] for r in mine]):.3f} | "
                         + " | ".join(cells) + " | "
                         + " | ".join(f"{o['locked']}/{o['n']} [{o['wilson95'][0]:.2f}, "
                                      f"{o['wilson95'][1]:.2f}]" for o in shares) + " | "
                         + " / ".join(f"{c['b']}-{c['c']}, p = {c['p']:.3f}" for c in tests) + " |")
        lines += ["", f"Mechanism ({arm}; mean over steps and seeds): shares of positive tokens by "
                      "ratio, and the weight the rung gives those with r < 0.8 and r < 1/3 (measured "
                      "by autograd in training)", "",
                  "| rung | drift | r < 1/3 | r < 0.5 | r < 0.8 | r < 1 | r > 1+eps_high | "
                  "w (r < 0.8) | w (r < 1/3) |", "|" + "---|" * 9]
        keys = ("drift", "below03_pos", "below05_pos", "below08_pos", "below1_pos", "clip_high_pos",
                "w_own_below08_pos", "w_own_below03_pos")
        for rung in rungs:
            v = [np.mean([x for r in runs_ if r["method"] == rung
                          for x in [r.get("stale", {}).get(key)] if x is not None] or [np.nan])
                 for key in keys]
            lines.append(f"| {rung} | {v[0]:.3f} | " + " | ".join(f"{x:.4f}" for x in v[1:6])
                         + f" | {v[6]:.2f} | {v[7]:.2f} |")
        if arm != "ladder":
            lines.append("")
            continue
        lines += ["", "Phase 8b's named contrasts (careful share on hard problems; the two-stage rule: "
                      f"interval includes 0 and |mean| >= {EXTEND_AT} at 16 seeds -> extend to 32):", ""]
        first = {k: v for k, v in by.items() if k[1] < 16}  # the first stage: seeds 0-15
        for left, right in DOSE_CONTRASTS:
            cell0, d0 = paired_cell(first, left, right, "careful_hard")
            cell, d = paired_cell(by, left, right, "careful_hard")
            if not len(d):
                continue
            if len(d0) and len(d) > len(d0):  # run on seeds 16-31 too: the first stage's reading stands
                v0 = dose_verdict(d0)
                v = (dose_verdict(d, first_stage=False) if v0.startswith("extend") else
                     "not extended by the rule: read, not tested")  # its rungs ran for another contrast
                lines.append(f"- {left} - {right}: {len(d0)} seeds: {cell0} ({v0}); "
                             f"{len(d)} seeds: {cell} ({v})")
            else:  # one stage; only seeds 0-15 alone are the first stage, which the rule may extend
                lines.append(f"- {left} - {right}: {cell} ({dose_verdict(d, len(d0) == len(d))})")
        lines.append("")
    return lines


# --- phase 9: the map (ASPO.md §12-§13): from which lag on, under which anchor, at which mu ---------------------
# (anchor, lag, epochs, seeds): seeds 0-7 of every cell first, the practitioners' lags 1 and 2 on seeds 8-15 last,
# so a session that stops early still leaves a whole map; mu = 8 minibatches x epochs
MAP_CELLS = ([("sampler", lag, 4, range(8)) for lag in (1, 2, 4, 16)]
             + [("decoupled", lag, 4, range(8)) for lag in (2, 16)]
             + [("sampler", 8, 1, range(8))]
             + [("sampler", lag, 4, range(8, 16)) for lag in (1, 2)]
             + [("sampler", 0, 4, range(8))]  # 9b: on-policy, the third method alone (phase 7 has grpo, aspo)
             + [("decoupled", 8, 4, range(8))])  # 9c: the same at lag 8 under the decoupled anchor
# the cells whose grpo and aspo an earlier phase ran (phase 7): the map runs the third method alone there
THIRD_ONLY = {("sampler", 0), ("decoupled", 8)}


def map_jobs(args, extra) -> list:
    """One batched process per cell of MAP_CELLS (grpo, aspo and --third on its 8 seeds; in THIRD_ONLY's cells
    --third alone, paired with phase 7's runs by seed), into <root>/map/<anchor>-L<lag>-mu<mu>/s<first>-<last>;
    --seeds narrows every cell to those seeds."""
    jobs = []
    for anchor, lag, epochs, cell_seeds in MAP_CELLS:
        seeds = [s for s in cell_seeds if s in args.seeds]
        methods = args.third if (anchor, lag) in THIRD_ONLY else f"grpo,aspo,{args.third}"
        if seeds:
            jobs.append(([*extra, "--seeds", ",".join(map(str, seeds)), "--methods", methods,
                          "--rollout-lag", str(lag), "--ratio-anchor", anchor, "--epochs", str(epochs)],
                         args.root / "map" / f"{anchor}-L{lag}-mu{8 * epochs}" / f"s{seeds[0]}-{seeds[-1]}", 1))
    return jobs


def map_cells(root: Path, third: str) -> dict:
    """{(anchor, lag, mu): {(method, seed): run}} of the map's runs, with the cells that phases 7 and 8 ran in the
    same settings: lag 8 under the sampler anchor at mu 32 (phase 8's ladder: grpo, aspo and every rung), lag 8
    under the decoupled anchor (phase 7) and lag 0 (phase 7's on-policy grpo and aspo, phase 8's control for
    the new rungs). Runs of the same cell from another process are paired by seed all the same."""
    cells = {}
    for path in sorted((root / "map").glob("*/*/summary.json")):
        cfg = json.loads(path.read_text())["config"]
        for run in json.loads(path.read_text())["runs"]:
            if run.get("final"):
                key = (cfg["ratio_anchor"], run["lag"], cfg["minibatches"] * cfg["epochs"])
                cells.setdefault(key, {})[run["method"], run["seed"]] = run
    keep = ("grpo", "aspo", third)
    for (anchor, lag, mu), by in stale_arms(root).items():
        cell = cells.setdefault(("sampler" if anchor == "on-policy" else anchor, lag, mu), {})
        cell.update({k: v for k, v in by.items() if k[0] in keep and k not in cell})
    for arm, by in dose_arms(root).items():
        # lag 8: phase 8's ladder over phase 7 (its third method ran in the same processes); lag 0: phase 7's
        # grpo and aspo stay (paired in their processes), phase 8's control only fills what they lack
        if arm in ("ladder", "on-policy"):
            cell = cells.setdefault(("sampler", 8 if arm == "ladder" else 0, 32), {})
            cell.update({k: v for k, v in by.items() if k[0] in keep and (arm == "ladder" or k not in cell)})
    return cells


def report_map(root: Path, third: str) -> list[str]:
    """Phase 9's table: per cell the staleness (drift, ESS), each method's final careful share on hard problems
    and pass@8, each method - grpo (paired t, seeds in favour) and the forgot / escaped shares."""
    cells = map_cells(root, third)
    if not any(key for key in cells if key[1] not in (0, 8)):
        return []
    methods = ("grpo", "aspo", third)
    lines = [f"### the map (`python experiments/runs.py map --third {third}`): final held-out, paired by seed", "",
             "| anchor | lag | mu | seeds | drift | ESS | careful (hard) " + " / ".join(methods)
             + " | pass@8 " + " / ".join(methods) + " | careful: aspo - grpo | careful: " + f"{third} - grpo"
             + f" | pass@8: aspo - grpo | pass@8: {third} - grpo | forgot " + " / ".join(methods) + " | escaped "
             + " / ".join(methods) + " |",
             "|" + "---|" * 14]
    for (anchor, lag, mu), by in sorted(cells.items(), key=lambda c: (c[0][0] != "sampler", -c[0][2], c[0][1])):
        seeds = sorted(s for m, s in by if m == "grpo" and ("aspo", s) in by)
        if not seeds:
            continue
        # each method over its own seeds among grpo's and aspo's (where phase 7 ran 32 seeds, 9b and 9c ran the
        # third method on 8); "-" where it has not run
        own = {m: [s for s in seeds if (m, s) in by] for m in methods}
        runs_ = [by[m, s] for m in methods for s in own[m]]
        mech = [np.mean([r["stale"][key] for r in runs_ if r.get("stale", {}).get(key) is not None] or [np.nan])
                for key in ("drift", "ess")]
        mean = lambda m, key: f"{np.mean([by[m, s]['final'][key] for s in own[m]]):.3f}" if own[m] else "-"
        sub = {k: v for k, v in by.items() if k[1] in seeds}
        cells_ = [paired_cell(sub, m, "grpo", key)[0] if own[m] else "-" for m, key in
                  (("aspo", "careful_hard"), (third, "careful_hard"), ("aspo", "pass@k"), (third, "pass@k"))]
        outs = [" / ".join(f"{o['locked']}/{o['n']}" if own[m] else "-"
                           for m, o in ((m, lockin_share(runs_, m, flag)) for m in methods))
                for flag in (forgot, escaped)]
        n = f"{len(seeds)}" + (f" ({third} {len(own[third])})" if len(own[third]) != len(seeds) else "")
        lines.append(f"| {'on-policy' if lag == 0 else anchor} | {lag} | {mu} | {n} | {mech[0]:.4f} | "
                     f"{mech[1]:.3f} | " + " / ".join(mean(m, "careful_hard") for m in methods) + " | "
                     + " / ".join(mean(m, "pass@k") for m in methods) + " | " + " | ".join(cells_) + " | "
                     + " | ".join(outs) + " |")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("suite", choices=("start", "tradeoff", "ladder", "lockin", "stale", "dose", "dose-controls",
                                     "map", "all", "report"),
                   help="what to run")
    p.add_argument("--lags", default="0,8", help="stale: comma-separated --rollout-lag values")
    p.add_argument("--anchors", default="sampler,decoupled", help="stale: comma-separated --ratio-anchor values")
    p.add_argument("--rungs", default="", help="dose: only these comma-separated rungs of each arm (the extension)")
    p.add_argument("--chunk", default=STALE_CHUNK, type=int,
                   help="dose: seeds per process (smaller chunks balance two processes of unequal arms)")
    p.add_argument("--third", default="posmean", help="map: the third method of every cell (phase 9a named posmean)")
    p.add_argument("--seeds", default=None, help="RL seeds (report on 0-7; develop on >= 100); default 0-7, for map "
                                                 "0-15: every cell's own seeds, the extension of lags 1 and 2 included")
    p.add_argument("--root", default=Path("experiments/runs"), type=Path, help="folder of the runs, the shared checkpoint and report.md")
    p.add_argument("--parallel", default=2, type=int, help="processes at once (each on one thread)")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        args.seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds is not None else
                      list(range(16 if args.suite == "map" else 8)))
        args.lags = [int(s) for s in args.lags.split(",")]
        args.anchors = args.anchors.split(",")
        args.rungs = args.rungs.split(",") if args.rungs else []
        if args.third not in DOSE_RUNGS or args.third in ("grpo", "aspo"):
            raise ValueError(f"--third {args.third}: expected a rung of the dose ladder other than grpo and aspo "
                             f"({','.join(r for r in DOSE_RUNGS if r not in ('grpo', 'aspo'))})")
        if "" in args.rungs:
            raise ValueError(f"--rungs {','.join(args.rungs)}: an empty entry")
        unknown = [r for r in args.rungs if r not in DOSE_RUNGS]
        if unknown:
            raise ValueError(f"--rungs {','.join(unknown)}: not a rung of the dose ladder ({','.join(DOSE_RUNGS)})")
        lr0 = na.parse_config(extra).lr  # also checks the extra nano_aspo flags before anything runs
    except ValueError as e:
        print(f"runs.py: error: {e}", file=sys.stderr)
        return 2
    if args.parallel < 1 or args.chunk < 1:
        print(f"runs.py: error: --{'parallel' if args.parallel < 1 else 'chunk'} must be >= 1", file=sys.stderr)
        return 2
    t0 = time.time()
    if args.suite in ("start", "all"):
        run_all(start_jobs(args, extra, 1), args.parallel)
        run_all(start_jobs(args, extra, 2), 1)  # a 2-thread process beside another one slows both several-fold
    if args.suite in ("tradeoff", "all"):
        run_all(rl_jobs("tradeoff", ("grpo", "aspo"), LR_FRACTIONS, lr0, args, extra), args.parallel)
    if args.suite in ("ladder", "all"):
        run_all(rl_jobs("ladder", LADDER, (1,), lr0, args, extra), args.parallel)
    if args.suite == "lockin":  # not in all: its regime is phase 6's, not the default's
        run_all(lockin_jobs(args, extra), args.parallel)
    if args.suite == "stale":
        run_all(stale_jobs(args, extra), args.parallel)
    if args.suite in ("dose", "dose-controls"):
        arms = ["ladder"] if args.suite == "dose" else ["on-policy", "decoupled"]
        run_all(dose_jobs(args, extra, arms), args.parallel)
    if args.suite == "map":
        run_all(map_jobs(args, extra), args.parallel)
    if args.suite != "report":
        print(f"wall time {time.time() - t0:.0f}s")
    lines = (report_start(args.root) + [""] + report_rl(args.root, "tradeoff", lr0) + [""] + report_rl(args.root, "ladder", lr0)
             + [""] + report_lockin(args.root) + [""] + report_stale(args.root) + [""] + report_dose(args.root)
             + [""] + report_map(args.root, args.third))
    text = "\n".join(lines).strip() + "\n"
    print(text)
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "report.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

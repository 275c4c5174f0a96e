"""Statistics over problems and over paired seeds (ASPO.md §10), for nano_aspo.py's closing table
(and its lines per step) and experiments/runs.py's reports: bootstrap standard errors and intervals,
the paired comparison of two methods run on the same seeds, t intervals, and for an outcome decided
once per seed (locked in or not) its share with a Wilson interval and the exact McNemar test of two
arms."""
import math

import numpy as np

# the final held-out metrics that every comparison reports (pass@k is stored under that name,
# whatever k)
COMPARED = ("entropy", "pass@1", "pass@k", "distinct_correct", "hard_pass@1", "hard_pass@k",
            "careful_hard")


def bootstrap_means(values, draws: int, seed: int = 0) -> np.ndarray:
    """Means of `draws` resamples (with replacement) of `values`: the bootstrap distribution of the
    mean."""
    x = np.asarray(values, dtype=float)
    return x[np.random.default_rng(seed).integers(0, len(x), size=(draws, len(x)))].mean(axis=1)


def bootstrap_se(values: list[float], seed: int = 0, draws: int = 1000) -> float:
    """Standard error of the mean of per-problem values, by resampling the problems (bootstrap)."""
    return float(bootstrap_means(values, draws, seed).std())


def bootstrap_ci(diffs, draws: int = 10_000) -> list[float] | None:
    """95% bootstrap percentile interval of the mean of per-seed differences (None below two
    seeds)."""
    if len(diffs) < 2:
        return None
    boot = bootstrap_means(diffs, draws)
    return [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]


def finals(runs: list[dict]) -> dict:
    """{(method, seed): final held-out numbers} of the runs that finished."""
    return {(r["method"], r["seed"]): r["final"] for r in runs if r["final"]}


def paired_comparison(runs: list[dict], baseline: str = "grpo") -> list[dict]:
    """For every method run beside `baseline`: the final held-out metrics' differences method -
    baseline, paired by seed (same checkpoint, prompts and evaluation draws), their mean, 95%
    intervals over seeds (None with one seed): t (t95, §10) and bootstrap percentile (ci95), and
    wins = seeds with a difference > 0."""
    by = finals(runs)
    out = []
    for method in dict.fromkeys(r["method"] for r in runs):
        seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
        if method == baseline or not seeds:
            continue
        for metric in COMPARED:
            if metric not in by[method, seeds[0]]:
                continue
            diffs = np.array([by[method, s][metric] - by[baseline, s][metric] for s in seeds])
            out.append({"method": method, "baseline": baseline, "metric": metric, "seeds": seeds,
                        "diffs": diffs.tolist(), "mean": float(diffs.mean()),
                        "ci95": bootstrap_ci(diffs), "t95": t_interval(diffs),
                        "wins": int((diffs > 0).sum())})
    return out


# §10's once-per-seed outcome: a careful share on hard held-out problems near 0 means the policy
# locked onto the shortcut (README); 0.2, fixed before the runs, draws that line (the start's share
# is 0.10: a run escapes only by raising it)
LOCKIN_CAREFUL_HARD = 0.2


def locked_in(final: dict) -> bool:
    """Whether a run locked onto the shortcut (§10, §8's carry task): its final careful share on
    hard held-out problems (final["careful_hard"], where only the careful strategy is right) is
    below LOCKIN_CAREFUL_HARD."""
    return final["careful_hard"] < LOCKIN_CAREFUL_HARD


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a share successes / n (§10: 4 of 8 gives about [0.22, 0.78]); unlike
    the normal interval it stays inside [0, 1] and is not empty at 0 or n. (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test (§10) on the discordant seeds of two arms, b one way and c the
    other: under no difference each discordant seed goes either way with probability 1/2, so
    p = min(1, 2 P(Binomial(b + c, 1/2) <= min(b, c))); 1 when there are none."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n) if n else 1.0


# The outcome per seed under stale rollouts (ASPO.md §12; fixed before the runs that report it,
# experiments/README.md phase 7): the careful share on hard held-out problems, 0.10 at the start,
# below FORGOT_BELOW means the policy forgot the careful way (below the start), at least ESCAPED_AT
# that it escaped the shortcut, in between that it has not learned it yet
FORGOT_BELOW, ESCAPED_AT = 0.05, 0.5


def forgot(final: dict) -> bool:
    return final["careful_hard"] < FORGOT_BELOW


def escaped(final: dict) -> bool:
    return final["careful_hard"] >= ESCAPED_AT


def lockin_share(runs: list[dict], method: str, flag=locked_in) -> dict:
    """The share of `method`'s finished runs whose final numbers `flag` (default locked_in), with
    its 95% Wilson interval."""
    flags = [flag(f) for (m, _), f in sorted(finals(runs).items()) if m == method]
    return {"method": method, "locked": sum(flags), "n": len(flags),
            "share": sum(flags) / len(flags) if flags else None,
            "wilson95": wilson_interval(sum(flags), len(flags))}


def paired_lockin(runs: list[dict], method: str, baseline: str = "grpo", flag=locked_in) -> dict:
    """Lock-in of `method` against `baseline` on the seeds both finished (§10): b = seeds where only
    `method` locked in, c = seeds where only `baseline` did, diff = method's share minus baseline's
    ((b - c) / seeds), p = the exact McNemar test of b against c."""
    by = finals(runs)
    seeds = sorted(s for (m, s) in by if m == method and (baseline, s) in by)
    pairs = [(flag(by[method, s]), flag(by[baseline, s])) for s in seeds]
    b, c = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    return {"method": method, "baseline": baseline, "b": b, "c": c,
            "diff": (b - c) / len(seeds) if seeds else None, "p": mcnemar_exact(b, c),
            "seeds": seeds}


def paired_line(c: dict, k: int, label: bool = True, interval: str = "ci95") -> str:
    """One comparison of paired_comparison or frontier_gap as a line: "aspo - grpo, pass@8: +0.012
    [-0.020, +0.041], 5/8 seeds > 0" (without its label: from the mean on), with its bootstrap
    interval (ci95) or its t interval (t95)."""
    what = (f"{c['method']} - {c['baseline']}, {c['metric'].replace('pass@k', f'pass@{k}')}: "
            if "metric" in c
            else f"{' / '.join(c['methods'])} vs {' / '.join(c['baselines'])}: ") if label else ""
    if c["mean"] is None:
        return f"{what}n/a"
    ci = f"[{c[interval][0]:+.3f}, {c[interval][1]:+.3f}]" if c[interval] else "(no interval)"
    return f"{what}{c['mean']:+.3f} {ci}, {c['wins']}/{len(c['seeds'])} seeds > 0"


def start_line(start: dict, k: int) -> str:
    """The start's held-out numbers (summary.json's "start") on one or two lines."""
    line = (f"start (held-out, {start['n_problems']} problems): pass@1 {start['pass@1']:.3f} +- "
            f"{start['pass@1_se']:.3f}  pass@{k} {start['pass@k']:.3f} +- "
            f"{start['pass@k_se']:.3f}  entropy {start['entropy']:.3f}")
    if "careful_hard" in start:  # a held-out set with hard problems
        line += (f"\n  hard pass@{k} {start['hard_pass@k']:.3f}  careful share (hard) "
                 f"{start['careful_hard']:.3f}")
    return line


def label(run: dict) -> str:
    """A run's arm: its method, and its lag where the rollouts are stale (§12)."""
    return run["method"] + (f" L{run['lag']}" if run.get("lag") else "")


def row(run: dict, step: int) -> dict:
    """The head of a run's metrics.jsonl row: method, lag, the ratio's anchor (§12), seed and step;
    from step 1 on, batch_from: whose samples the training batch's numbers (reward, entropy,
    dead_groups, distinct, careful) are: the policy's own at lag 0, else the stale sampler's."""
    head = {key: run[key] for key in ("method", "lag", "anchor", "seed") if key in run}
    return head | {"step": step} | ({"batch_from": "stale sampler" if run["lag"] else "policy"}
                                    if step else {})


def console_line(run: dict, step: int, m: dict, k: int) -> str:
    """A logged step of a run (metrics m) on one line: its training batch (the stale sampler's at
    lag > 0, §12), the ratio and staleness, and the held-out numbers where it was evaluated."""
    ev = (f" | pass@1 {m['eval_pass@1']:.3f}+-{m['eval_pass@1_se']:.3f} pass@{k} "
          f"{m[f'eval_pass@{k}']:.3f}+-{m[f'eval_pass@{k}_se']:.3f} ent {m['eval_entropy']:.3f}"
          + (f" careful(hard) {m['eval_careful_hard']:.2f}" if "eval_careful_hard" in m else "")
          if "eval_pass@1" in m else "")
    return (f"{label(run):7s} s{run['seed']:<3d} step {step:4d} | "
            f"{'sampler batch: ' if run['lag'] else ''}reward {m['reward']:.3f} ent "
            f"{m['entropy']:.3f} dead {m['dead_groups']:.2f} |log r| "
            f"{m.get('abs_log_ratio', 0):.3f} clip+ {m.get('clip_high_pos', 0):.3f} dual+ "
            f"{m.get('clip_dual_pos', 0):.3f} drift {m['drift']:.4f} ess {m['ess']:.2f}{ev}")


def by_lag(runs: list[dict]) -> dict:
    """{lag: that lag's runs, each with its arm's label as its method}: comparisons stay in a
    lag."""
    lags = dict.fromkeys(r.get("lag", 0) for r in runs)
    return {lag: [dict(r, method=label(r)) for r in runs if r.get("lag", 0) == lag] for lag in lags}


def compare(runs: list[dict]) -> dict:
    """summary.json's comparisons, within each lag: every method against grpo, paired by seed, on
    the continuous endpoints, and on the outcome per seed (a held-out set with hard problems only):
    the share locked in, forgot, escaped (Wilson), and each paired with grpo (exact McNemar)."""
    out = {"comparison": [], "outcomes": [], "outcomes_paired": []}
    for lag, arm_runs in by_lag(runs).items():
        base = label({"method": "grpo", "lag": lag})
        out["comparison"] += [c | {"lag": lag} for c in paired_comparison(arm_runs, base)]
        arms = list(dict.fromkeys(r["method"] for r in arm_runs if r.get("final")))
        for name, flag in OUTCOMES.items():
            if not all("careful_hard" in r["final"] for r in arm_runs if r.get("final")):
                break
            out["outcomes"] += [lockin_share(arm_runs, m, flag) | {"outcome": name, "lag": lag}
                                for m in arms]
            out["outcomes_paired"] += [paired_lockin(arm_runs, m, base, flag)
                                       | {"outcome": name, "lag": lag}
                                       for m in arms if m != base and base in arms]
    return out


OUTCOMES = {"forgot": forgot, "escaped": escaped}
# per run, mean over steps (summary.json "stale"): the staleness, where the positive tokens' ratios
# lie (the dose ladder's figure draws them) and the weights given to the stale ones (ASPO.md §13)
MECHANISM = ("drift", "ess", "below08_pos", "below03_pos", "w_grpo_below08_pos",
             "w_aspo_below08_pos", "below1_pos", "below05_pos", "clip_high_pos",
             "w_own_below08_pos", "w_own_below03_pos")


def summary_lines(start: dict, runs: list[dict], summary: dict, k: int) -> list[str]:
    """nano_aspo.py's closing table: the start; per arm (method and lag) the end (mean over seeds)
    and its outcomes per seed (share, 95% Wilson); the staleness and the weights the methods give
    stale positive tokens (mean over steps); then the paired differences against grpo at the same
    lag (t intervals, §10) and the outcomes paired by exact McNemar. At lag > 0 the runs' anchor
    (§12) is named: under the decoupled one the ratio of those tokens is u = pi_theta / pi_prox."""
    lines = [start_line(start, k)]
    anchor = next((r.get("anchor", "sampler") for r in runs if r.get("lag")), None)
    x = "u" if anchor == "decoupled" else "r"  # the ratio the method's weight sees
    if anchor:
        lines.append(f"arms: method and lag L > 0 (stale rollouts, the {anchor} anchor: "
                     + ("u = pi_theta/pi_prox times w_b" if x == "u" else
                        "r = pi_theta/pi_behaviour") + ", §12)")
    keys = [key for key in ("entropy", "pass@1", "pass@k", "hard_pass@k", "careful_hard")
            if key in start]
    shares = {(o["method"], o["outcome"]): o for o in summary["outcomes"]}
    if runs:
        lines.append(f"{'arm':16s} {'seeds':>5s} | " + " | ".join(
            f"{key.replace('pass@k', f'pass@{k}'):>12s}" for key in keys)
            + "".join(f" | {name} (95% Wilson)" for name in OUTCOMES if shares))
    for arm_runs in by_lag(runs).values():
        for arm in dict.fromkeys(r["method"] for r in arm_runs):
            ends = [r["final"] for r in arm_runs if r["method"] == arm and r["final"]]
            if not ends:
                continue
            cells = []
            for name in OUTCOMES if shares else []:
                o = shares[arm, name]
                cells.append(f"{o['locked']}/{o['n']} [{o['wilson95'][0]:.2f}, "
                             f"{o['wilson95'][1]:.2f}]")
            lines.append(f"{arm[:16]:16s} {len(ends):5d} | " + " | ".join(
                f"{np.mean([f[key] for f in ends]):12.3f}" for key in keys)
                + "".join(f" | {c:>22s}" for c in cells))
    stale = [r for r in runs if r.get("stale")]
    if stale:
        lines.append(f"staleness and positive tokens with {x} < 0.8 (mean over steps and seeds): "
                     "drift E[(log pi_prox/pi_behaviour)^2], ESS, their share (and below 1/3), the "
                     "weight grpo and aspo give them" + (" (times w_b)" if x == "u" else ""))
    for arm_runs in by_lag(stale).values():
        for arm in dict.fromkeys(r["method"] for r in arm_runs):
            v = {key: np.mean([x for r in arm_runs if r["method"] == arm
                               for x in [r["stale"].get(key)] if x is not None] or [np.nan])
                 for key in MECHANISM}
            lines.append(f"  {arm:16s} drift {v['drift']:.4f}  ESS {v['ess']:.3f}  share "
                         f"{v['below08_pos']:.3f} (1/3: {v['below03_pos']:.3f})  weight grpo "
                         f"{v['w_grpo_below08_pos']:.2f} aspo {v['w_aspo_below08_pos']:.2f}")
    if summary["comparison"]:
        seeds = min(len(c["seeds"]) for c in summary["comparison"])
        lines.append("paired differences (final held-out; mean, 95% t interval over seeds, seeds "
                     "in favour" + ("; one seed has no interval: use --seeds 0,1,...,7" if seeds < 2
                                 else "") + "):")
        if 2 <= seeds < 32:  # a few seeds: their intervals may well include 0
            lines.append(f"  ({seeds} seeds: an interval that includes 0 says only that {seeds} "
                         "seeds cannot tell; README Results has 32 seeds)")
    lines += ["  " + paired_line(c, k, interval="t95") for c in summary["comparison"]]
    for c in summary["outcomes_paired"]:
        if c["seeds"]:
            lines.append(f"  {c['method']} - {c['baseline']}, {c['outcome']}: {c['diff']:+.3f} "
                         f"({c['b']} seeds only {c['method']}, {c['c']} only {c['baseline']}; "
                         f"exact McNemar p = {c['p']:.3f}, {len(c['seeds'])} seeds)")
    return lines


def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with df degrees of freedom (p > 0.5), by bisection on its CDF,
    the density integrated with Simpson's rule (numpy only, no scipy)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    def cdf(x):
        grid = np.linspace(0.0, x, 2001)
        pdf = np.exp(log_c - (df + 1) / 2 * np.log1p(grid ** 2 / df))
        return 0.5 + (grid[1] - grid[0]) / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum()
                                                + 2 * pdf[2:-1:2].sum())
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def t_interval(diffs, level: float = 0.95) -> list[float] | None:
    """The t interval of the mean of per-seed differences (§10: continuous endpoints); None below
    two seeds."""
    x = np.asarray(diffs, dtype=float)
    if len(x) < 2:
        return None
    half = t_quantile(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return [float(x.mean() - half), float(x.mean() + half)]

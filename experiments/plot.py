"""Figures from real runs and from the loss code itself (needs matplotlib).

    python experiments/plot.py --metrics out/metrics.jsonl     # out/curves.png: that run's curves, beside its outputs
    python experiments/plot.py --weights --out-dir assets      # assets/weights.png: w(r) of each method (README)
    python experiments/plot.py --tradeoff experiments/runs/tradeoff --out-dir assets   # assets/tradeoff.png (README)
    python experiments/plot.py --dose experiments/runs --out-dir assets   # assets/dose_ladder.png (README, phase 8)
    python experiments/plot.py --map experiments/runs --third nois --out-dir assets   # assets/stale_map.png (phase 9)

A figure goes to --out-dir, by default the folder of the run it draws, so a reader's own run never
overwrites the README's figures in assets/: only the commands that regenerate those name assets/.

The weight figure is computed by autograd through nano_aspo.policy_loss, so it cannot drift from the
code: for one token with advantage A = +1 or -1, w = -dL/dlogp / A (ASPO.md §3).
"""
import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: nano_aspo.py and its modules
from experiments.results import label_order, load_suite, read_metrics  # noqa: E402
from integrations.weight_figure import color, plot_weights, weights  # noqa: E402 (check_loss --plot's too)
import nano_aspo as na  # noqa: E402
import stats  # noqa: E402 (the core's: an arm's label)
import torch  # noqa: E402

def plot_curves(metrics: list[Path], path: Path, plt):
    """One panel per metric, one line per arm (method and lag; dashed where the rollouts are stale,
    §12): the mean over seeds at each logged step, the band min..max. A panel skips an arm without
    that metric (older runs, or a metric only some runs write)."""
    rows = read_metrics(metrics)
    k = next(key for key in rows[-1] if key.startswith("eval_pass@") and key != "eval_pass@1")
    panels = [("entropy", "train batch entropy (nats/token; at lag > 0 the stale sampler's)"),
              ("eval_pass@1", "held-out pass@1"),
              (k, f"held-out pass@{k.split('@')[1]}"),
              ("dead_groups", "share of dead groups (train batch; at lag > 0 the stale sampler's)"),
              ("eval_careful_hard", "careful strategy's share on hard held-out problems"),
              ("drift", "staleness: drift E[(log pi_prox/pi_behaviour)^2] (§12)")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    for ax, (key, label) in zip(axes.flat, panels):
        for method, lag in dict.fromkeys((r["method"], r.get("lag", 0)) for r in rows):
            by_step = {}
            for r in rows:
                if (r["method"], r.get("lag", 0)) == (method, lag) and key in r:
                    by_step.setdefault(r["step"], []).append(r[key])
            if not by_step:
                continue
            steps = sorted(by_step)
            vals = [by_step[s] for s in steps]
            mean = [sum(v) / len(v) for v in vals]
            arm = stats.label({"method": method, "lag": lag})
            ax.plot(steps, mean, color=color(method), lw=2, ls="--" if lag else "-",
                    label=f"{arm} (mean of {len(vals[-1])} seeds)")
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals],
                            color=color(method), alpha=0.2)
        ax.set_xlabel("RL step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    source = str(metrics[0]) if len(metrics) == 1 else f"{len(metrics)} metrics files"
    fig.suptitle(f"GRPO vs ASPO from the same checkpoint ({source}): mean over seeds, band = min..max\nheld-out "
                 f"curves: the full set at the start and the end, a fixed subset (--curve-problems) in between")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def plot_tradeoff(folder: Path, path: Path, plt):
    """The pace-free view (§6): held-out pass@1 against entropy and pass@k against pass@1 at every
    evaluation, one line per method and learning rate (mean over seeds at each evaluation step, bars =
    one standard deviation of the y value over seeds), from runs.py's tradeoff suite."""
    runs = load_suite(folder)
    if not runs:
        raise ValueError(f"{folder} holds no finished runs (python experiments/runs.py tradeoff)")
    k = runs[0]["k"]
    labels = sorted({r["method"] for r in runs}, key=label_order)
    panels = [("eval_entropy", "eval_pass@1", "held-out entropy (nats/token)", "held-out pass@1"),
              ("eval_pass@1", f"eval_pass@{k}", "held-out pass@1", f"held-out pass@{k}")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        for label in labels:
            method, lr = label.split("@")
            rank = sorted({float(m.split("@")[1]) for m in labels if m.startswith(method + "@")}, reverse=True).index(float(lr))
            paths = [r["path"] for r in runs if r["method"] == label]
            n = min(len(p) for p in paths)  # the same evaluation steps in every seed's path
            xs = np.array([[p[i][x] for i in range(n)] for p in paths]).mean(axis=0)
            ys = np.array([[p[i][y] for i in range(n)] for p in paths])
            mean, sd = ys.mean(axis=0), ys.std(axis=0)
            # a path can turn back in x, so the spread is a bar at each evaluation (clipped to [0, 1]), not a band
            ax.errorbar(xs, mean, yerr=[mean - np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1) - mean],
                        fmt=("-", "--", ":")[rank % 3], marker="o", ms=3, color=color(method), lw=2, elinewidth=0.8,
                        capsize=2, alpha=0.9, label=f"{method} lr {lr} ({len(paths)} seeds)")
            ax.plot(xs[-1], mean[-1], "s", ms=7, color=color(method))  # the end point
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].invert_xaxis()  # training moves right: entropy falls
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Held-out paths, start (step 0) to end (square), mean over seeds ({folder}); "
                 f"a method whose path lies above the others at equal x is better at equal diversity", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


# the bins of the positive tokens' ratios that every run keeps (stats.MECHANISM): (lower edge, share key)
RATIO_BINS = ((1 / 3, "below03_pos"), (0.5, "below05_pos"), (0.8, "below08_pos"), (1.0, "below1_pos"))


def plot_dose(root: Path, path: Path, plt):
    """The dose ladder (experiments/README.md phase 8, ASPO.md §13). Left: the weight each rung gives a
    positive token against its ratio r, by autograd through policy_loss (one token per completion; m2po's
    depends on the whole batch and is left out), over the measured distribution of r of the positive tokens
    at lag 8 (grpo's runs, mean over steps and seeds, log scale). Right: each rung's final careful share on
    hard problems, mean over seeds with its 95% t interval, and rung - grpo paired by seed."""
    from experiments.runs import DOSE_RUNGS, dose_arms, paired_cell, seed_counts
    by = dose_arms(root).get("ladder")
    if not by:
        raise ValueError(f"no finished dose-ladder runs under {root / 'dose' / 'ladder'}")
    rungs = [r for r in DOSE_RUNGS if any(m == r for m, _ in by)]
    seeds = sorted(s for m, s in by if m == "grpo")
    hue = dict(zip(DOSE_RUNGS, plt.get_cmap("tab10").colors))  # ten rungs, ten colors
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1.25, 1]})
    # the measured distribution: each bin's share, from the cumulative shares the runs keep
    stale = [r["stale"] for (m, _), r in by.items() if m == "grpo" and r.get("stale")]
    cum = {key: np.mean([x[key] for x in stale if x.get(key) is not None])
           for _, key in RATIO_BINS + ((0, "clip_high_pos"),)}
    edges = [0.12] + [b for b, _ in RATIO_BINS] + [1 + na.Config().eps_high, 1.7]
    below = [0.0] + [cum[key] for _, key in RATIO_BINS]
    shares = list(np.diff(below)) + [1 - below[-1] - cum["clip_high_pos"], cum["clip_high_pos"]]
    hist = ax.twinx()
    hist.bar(edges[:-1], shares, width=np.diff(edges), align="edge", color="0.88", edgecolor="0.7", log=True)
    hist.set_ylabel("share of positive tokens in each bin (grpo's runs; log scale)", color="0.4")
    ax.set_zorder(hist.get_zorder() + 1)
    ax.patch.set_visible(False)
    clip = {key: getattr(na.Config(), key) for key in ("eps_low", "eps_high", "clip_c")}
    r = torch.logspace(np.log10(edges[0]), np.log10(edges[-1]), 400).double()
    for rung, style in zip([x for x in rungs if x != "m2po"], itertools.cycle(("-", "--", ":", "-."))):
        ax.plot(r, weights(rung, r, 1.0, **clip), style, color=hue[rung], lw=2, label=rung)
    ax.set_xscale("log")
    ticks = [1 / 3, 0.5, 0.8, 1, 1 + clip["eps_high"]]
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("r = pi_theta / pi_behaviour of a positive token (A > 0), log scale")
    ax.set_ylabel("weight w in grad = -A w grad log pi / N")
    ax.set_title("the dose a stale right token gets (r < 1: its probability fell)")
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    ax.grid(alpha=0.3)
    start = by["grpo", seeds[0]]["initial"]["careful_hard"]
    for i, rung in enumerate(rungs):
        # each rung over its own seeds (phase 8's extension ran some rungs on seeds 16-31 as well)
        mine = [s for s in seeds if (rung, s) in by]
        vals = np.array([by[rung, s]["final"]["careful_hard"] for s in mine])
        lo, hi = stats.t_interval(vals) or (vals.mean(), vals.mean())
        bx.errorbar(vals.mean(), i, xerr=[[vals.mean() - lo], [hi - vals.mean()]], fmt="o", color=hue[rung],
                    capsize=3)
        d = paired_cell(by, rung, "grpo", "careful_hard")[1]
        dlo, dhi = stats.t_interval(d) or (d.mean(), d.mean())
        bx.annotate(f"n {len(mine)}" if rung == "grpo" else
                    f"{d.mean():+.3f} [{dlo:+.3f}, {dhi:+.3f}] n {len(mine)}", (hi, i), xytext=(6, -3),
                    textcoords="offset points", fontsize=8)
    bx.axvline(start, color="gray", ls=":", lw=1)
    bx.text(start, len(rungs) - 0.4, " start", color="gray", fontsize=8)
    bx.set_yticks(range(len(rungs)), rungs)
    bx.invert_yaxis()
    bx.set_xlabel("final careful share on hard problems (mean, 95% t interval over seeds)")
    bx.set_title(f"what each dose kept ({seed_counts(by, rungs)} paired seeds; text: rung - grpo, paired t 95%, seeds)", fontsize=10)
    bx.grid(alpha=0.3, axis="x")
    fig.suptitle("The dose ladder at lag 8, sampler anchor, mu 32, 100 steps (experiments/README.md phase 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot_map(root: Path, third: str, path: Path, plt):
    """The map (experiments/README.md phase 9): per anchor, aspo - grpo and third - grpo on the final careful
    share of hard problems against the lag (mean, paired 95% t interval; hollow: mu 8), the drift
    E[(log pi_prox/pi_behaviour)^2] on a second axis; and grpo's own careful share against the lag."""
    from experiments.runs import map_cells, paired_cell
    cells = map_cells(root, third)
    if not cells:
        raise ValueError(f"no finished map runs under {root}")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    x = lambda lag: lag + 0.5  # lag 0 on a log axis
    for ax, anchor in zip(axes[:2], ("sampler", "decoupled")):
        drift = ax.twinx()
        for (a, lag, mu), by in sorted(cells.items()):
            if a != anchor and not (lag == 0 and anchor == "decoupled"):  # lag 0: the same run under both
                continue
            for i, (m, col) in enumerate((("aspo", "tab:blue"), (third, "tab:green"))):
                d = paired_cell(by, m, "grpo", "careful_hard")[1]  # as report_map's table
                if len(d) < 2:
                    continue
                lo, hi = stats.t_interval(d)
                ax.errorbar(x(lag) * (1.06 if i else 0.94) * (1 if mu == 32 else 1.2), d.mean(),
                            yerr=[[d.mean() - lo], [hi - d.mean()]],
                            fmt="o", color=col, mfc=col if mu == 32 else "white", capsize=3,
                            label=f"{m} - grpo" + ("" if mu == 32 else f" (mu {mu})"))
            values = [r["stale"]["drift"] for r in by.values() if r.get("stale", {}).get("drift") is not None]
            if values and mu == 32:
                drift.plot(x(lag), np.mean(values), "x", color="0.5")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ticks = sorted({lag for a, lag, _ in cells if a == anchor or lag == 0})
        ax.set_xticks([x(t) for t in ticks], [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("rollout lag L (steps)")
        ax.set_ylabel("careful share on hard: method - grpo")
        drift.set_ylabel("drift E[(log pi_prox/pi_behaviour)^2] (x)", color="0.4")
        ax.set_title(f"{anchor} anchor (mu 32; hollow: mu 8)")
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(), fontsize=8,
                  loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: the points fill the panel
        ax.grid(alpha=0.3)
    for anchor, style, shift in (("sampler", "o-", 0.97), ("decoupled", "s--", 1.03)):
        pts = sorted(((lag, np.array([r["final"]["careful_hard"] for (m, _), r in by.items() if m == "grpo"]))
                      for (a, lag, mu), by in cells.items() if mu == 32 and (a == anchor or lag == 0)),
                     key=lambda pt: pt[0])
        if not pts:
            continue
        means = np.array([v.mean() for _, v in pts])
        ci = np.array([stats.t_interval(v) or (v.mean(), v.mean()) for _, v in pts])
        axes[2].errorbar([x(lag) * shift for lag, _ in pts], means, yerr=[means - ci[:, 0], ci[:, 1] - means],
                         fmt=style, capsize=3, label=f"grpo, {anchor} anchor (95% t)")
    start = next(r["initial"]["careful_hard"] for by in cells.values() for r in by.values())
    axes[2].axhline(start, color="gray", ls=":", lw=1, label="the start")
    axes[2].set_xscale("log")
    axes[2].set_xticks([x(t) for t in sorted({lag for _, lag, _ in cells})],
                       [str(t) for t in sorted({lag for _, lag, _ in cells})])
    axes[2].minorticks_off()
    axes[2].set_xlabel("rollout lag L (steps)")
    axes[2].set_ylabel("grpo's final careful share on hard problems")
    axes[2].set_title("what staleness does to grpo alone")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"The map: from which lag on ASPO (and {third}) differ from GRPO (experiments/README.md phase 9)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--metrics", type=Path, nargs="+",
                   help="metrics.jsonl file(s) written by nano_aspo.py (several: their runs together): curves.png")
    p.add_argument("--weights", action="store_true", help="weights.png: w(r) of each built-in method, from policy_loss")
    p.add_argument("--tradeoff", metavar="FOLDER", type=Path,
                   help="tradeoff.png from runs.py's tradeoff suite in FOLDER (e.g. experiments/runs/tradeoff)")
    p.add_argument("--dose", metavar="ROOT", type=Path,
                   help="dose_ladder.png from runs.py's dose suite under ROOT (e.g. experiments/runs)")
    p.add_argument("--map", metavar="ROOT", type=Path,
                   help="stale_map.png from runs.py's map suite under ROOT, with phases 7 and 8's matching cells")
    p.add_argument("--third", default="posmean", help="--map: the third method drawn beside aspo (phase 9a named posmean)")
    p.add_argument("--out-dir", type=Path, help="folder the PNGs go to (default: the folder of the first metrics "
                                                "file or of FOLDER; assets only where you name it)")
    args = p.parse_args(argv)
    if not (args.metrics or args.weights or args.tradeoff or args.dose or args.map):
        p.error("nothing to draw: give --metrics, --weights, --tradeoff, --dose or --map")
    out = args.out_dir or (args.metrics[0].parent if args.metrics else
                           args.tradeoff or args.dose or args.map or Path("."))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: error: matplotlib is not installed (pip install matplotlib); the JSON metrics are unaffected",
              file=sys.stderr)
        return 1
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.weights:
            plot_weights(out / "weights.png", plt)
        if args.metrics:
            plot_curves(args.metrics, out / "curves.png", plt)
        if args.tradeoff:
            plot_tradeoff(args.tradeoff, out / "tradeoff.png", plt)
        if args.dose:
            plot_dose(args.dose, out / "dose_ladder.png", plt)
        if args.map:
            plot_map(args.map, args.third, out / "stale_map.png", plt)
    except (OSError, ValueError) as e:
        print(f"plot.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The weight figure: w(r) of policy losses for each sign of A, by autograd through
nano_aspo.policy_loss (ASPO.md §3). Drawn by `python experiments/plot.py --weights` (the README's
figure) and by `python integrations/check_loss.py FILE.py:FUNCTION --plot w.png` (a user's loss
beside a built-in one); here, in integrations/, so that check_loss needs nothing of experiments/.
Needs matplotlib (the caller imports it)."""
import itertools
import zlib
from pathlib import Path

import torch

import nano_aspo as na  # its two callers put the repository on sys.path

COLORS = {"grpo": "tab:red", "aspo": "tab:blue", "nois": "tab:green"}
MORE_COLORS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan",
               "black")


def color(method: str) -> str:
    """A method's color: fixed for the README's three, else picked by its name (any name, e.g. a
    user's FILE.py:FUNCTION run), the same in every figure and every run."""
    return COLORS.get(method) or MORE_COLORS[zlib.crc32(method.encode()) % len(MORE_COLORS)]


def weights(method: str, ratios: torch.Tensor, sign: float, **clip) -> torch.Tensor:
    """w(r) for each ratio: one token per completion, with advantage `sign`, through
    nano_aspo.token_weights (at equal entropies, so the entropy-split methods clip with the eps
    passed)."""
    logp = ratios.log()[:, None]
    return na.token_weights(method, logp, torch.zeros_like(logp), torch.full_like(ratios, sign),
                            torch.ones_like(logp), entropy=torch.zeros_like(logp), **clip)[:, 0]


def plot_weights(path: Path, plt, eps_low=0.2, eps_high=0.28, clip_c=3.0,
                 methods=na.FLAT_CLIP_METHODS):
    r = torch.logspace(-0.7, 0.65, 400, base=10).double()  # 0.2 .. 4.5
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, sign, title in ((axes[0], 1.0, "positive advantage (A > 0)"),
                            (axes[1], -1.0, "negative advantage (A < 0)")):
        for method, style in zip(methods, itertools.cycle(("-", "--", ":", "-."))):
            w = weights(method, r, sign, eps_low=eps_low, eps_high=eps_high, clip_c=clip_c)
            ax.plot(r, w, style, color=color(method), lw=2, label=method)
        for x in (1 / clip_c, 1 - eps_low, 1 + eps_high, clip_c):  # the clip boundaries
            ax.axvline(x, color="gray", lw=0.8, alpha=0.6)
        ax.set_xscale("log")
        ticks = [0.25, 1 / clip_c, 0.5, 1 - eps_low, 1, 1 + eps_high, 2, clip_c, 4]
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("importance ratio r = pi_theta / pi_old (log scale)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("weight w in grad = -A w grad log pi / N")
    axes[0].legend()
    fig.suptitle(f"Per-token gradient weights, computed by autograd through policy_loss\n"
                 f"gray lines: 1/c, 1-eps_low, 1+eps_high, c  (eps_low={eps_low}, "
                 f"eps_high={eps_high}, c={clip_c})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")

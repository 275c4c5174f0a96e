"""Check a policy loss by its per-token gradient weights: is it really ASPO (or GRPO, or ...)?

    python integrations/check_loss.py integrations/verl_aspo.py:compute_policy_loss_aspo       # exit 0: it is ASPO
    python integrations/check_loss.py integrations/broken_aspo.py:aspo_unflipped --reference aspo  # exit 1, per branch
    python integrations/check_loss.py grpo --reference posmean                                 # two built-in methods

Every loss of ASPO.md has the gradient -(1/N) sum_t A_t w_t grad log pi_t, with the weight w_t a function of
the ratio r_t = pi_theta / pi_old and the sign of A_t (§3-§5). A loss that trains but weights tokens wrongly
is invisible in training curves and obvious in that table. check_loss calls FUNCTION as verl calls a policy
loss (integrations/user_loss.py), measures w by autograd (nano_aspo.token_weights) in every branch (sign of A x the ratio ranges between
1/c, 1-eps_low, 1, 1+eps_high and c, plus a row of mixed ratios and a padding token), each relative to the
same function's gradient at r = 1 so that its aggregation does not matter, and compares with the reference
method computed the same way through nano_aspo.policy_loss. Exit 0: every branch within 1e-4 of the
reference; 1: a line per branch that is not; 2: bad input (one line).
"""
import argparse
import functools
import math
import sys
from dataclasses import dataclass

from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: nano_aspo.py and its modules
import nano_aspo as na  # noqa: E402
import peers  # noqa: E402
from integrations.user_loss import one_line, register_user_loss  # noqa: E402

TOLERANCE = 1e-4
# the references: every built-in method but the entropy-split ones, which clip each token by its entropy under
# the current policy, an input verl's policy-loss call does not give (at equal entropies they are grpo, grpo
# with the soft negative dual-clip, and aspo); the split rungs and the peers of the dose ladder (§13). m2po's
# weight depends on the whole batch: in a probe whose tokens share one ratio beyond its budget it keeps one
# token (AReaL's rule), so its table reads that case
REFERENCES = na.FLAT_CLIP_METHODS + na.SPLIT_METHODS + tuple(peers.LOSSES)
# two completions of four tokens; the second one's last token is padding (mask 0)
OLD_LOGP = torch.tensor([[-1.7, -0.9, -2.3, -0.4], [-1.2, -3.0, -0.6, -1.5]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float64)
PADDING = (1, 3)


@dataclass
class Branch:
    name: str          # the sign of A and where the ratio lies, e.g. "A > 0, 1/c <= r < 1-eps_low"
    sign: float        # the advantage of both completions
    probes: list       # one (2, 4) ratio matrix per probe point
    token: tuple       # the token whose weight is read
    unit: tuple        # the token whose gradient at r = 1 is the unit of w (the same token but for padding)


def ratio_ranges(eps_low, eps_high, clip_c) -> list[tuple[str, list[float]]]:
    """(label, two probe ratios) for each range between the clip boundaries of §4-§5, in order. The probes are
    interior points (a third and two thirds of the way in log r), so they stay off every boundary whatever the
    flags; boundaries that coincide for some flags merge into one."""
    bounds = {}
    for value, name in ((1 / clip_c, "1/c"), (1 - eps_low, "1-eps_low"), (1.0, "1"), (1 + eps_high, "1+eps_high"),
                        (clip_c, "c")):
        bounds[value] = f"{bounds[value]}={name}" if value in bounds else name
    (lo, lo_name), *rest = sorted(bounds.items())
    ranges = [(f"r < {lo_name}", [lo / 2, lo * 3 / 4])]
    for hi, hi_name in rest:
        ranges.append((f"{lo_name} <= r < {hi_name}", [lo * (hi / lo) ** (1 / 3), lo * (hi / lo) ** (2 / 3)]))
        lo, lo_name = hi, hi_name
    return ranges + [(f"r > {lo_name}", [lo * 1.5, lo * 2])]


def branches(eps_low, eps_high, clip_c) -> list[Branch]:
    """Every branch of the weight table: per sign of A, each ratio range (all tokens at r); a mixed row (one
    token at r just below 1, the rest at 1: a weight shared by a completion's tokens, as posmean's mean ratio,
    shows only there); and the padding token, whose weight must be 0."""
    ranges = ratio_ranges(eps_low, eps_high, clip_c)
    below1 = next(points for label, points in ranges if label.endswith("< 1"))
    above1 = next(points for label, points in ranges if label.startswith("1 <= r"))
    full = lambda points: [torch.full_like(OLD_LOGP, r) for r in points]
    mixed = [torch.ones_like(OLD_LOGP).index_fill_(1, torch.tensor([0]), r) for r in below1]
    out = []
    for sign, s in ((1.0, "A > 0"), (-1.0, "A < 0")):
        out += [Branch(f"{s}, {label}", sign, full(points), (0, 0), (0, 0)) for label, points in ranges]
        out += [Branch(f"{s}, mixed row: its token at r", sign, mixed, (0, 0), (0, 0)),
                Branch(f"{s}, mixed row: its tokens at r = 1", sign, mixed, (0, 1), (0, 1)),
                Branch(f"{s}, padding token (masked)", sign, full(above1), PADDING, (1, 0))]
    return out


def probe_weights(method: str, ratios: torch.Tensor, sign: float, clip: dict) -> torch.Tensor:
    """w of every token of the probe batch at these ratios (B, T), by nano_aspo.token_weights (a FILE.py:FUNCTION
    method is called as verl calls it, by integrations/user_loss.py)."""
    return na.token_weights(method, OLD_LOGP + ratios.log(), OLD_LOGP, torch.full((2,), sign, dtype=torch.float64),
                            MASK, **clip)


def weight_table(method: str, eps_low: float, eps_high: float, clip_c: float) -> list[tuple[Branch, list[float]]]:
    """(branch, w at each probe) for every branch: the gradient on the branch's token divided by the gradient
    on its unit token with every ratio 1 (§3: w = 1 at r = 1 for every method of ASPO.md)."""
    clip = {"eps_low": eps_low, "eps_high": eps_high, "clip_c": clip_c}
    units = {}
    for sign in (1.0, -1.0):
        side = f"A {'>' if sign > 0 else '<'} 0"
        # a loss that is nan or inf at r = 1 has no weight anywhere: one line, not rows of "w = nan"
        advantages = torch.full((2,), sign, dtype=torch.float64)
        loss, _ = na.policy_loss(method, OLD_LOGP, OLD_LOGP, advantages, MASK, **clip)
        if not torch.isfinite(loss):
            raise ValueError(f"it returned a loss of {loss.item()} at r = 1 for {side}")
        units[sign] = probe_weights(method, torch.ones_like(OLD_LOGP), sign, clip)
        if not torch.isfinite(units[sign][MASK > 0]).all():
            raise ValueError(f"its gradient at r = 1 is not finite for {side}")
        if (units[sign][MASK > 0] == 0).any():
            raise ValueError(f"its gradient at r = 1 is zero for {side}, so there is no "
                             "weight to compare (a detached or constant loss on that side?)")
    return [(b, [(probe_weights(method, probe, b.sign, clip)[b.token] / units[b.sign][b.unit]).item() for probe in b.probes])
            for b in branches(eps_low, eps_high, clip_c)]


@functools.lru_cache(maxsize=None)
def reference_table(method: str, eps_low: float, eps_high: float, clip_c: float):
    """weight_table of a built-in method, computed once per flags (it cannot change in a process)."""
    return weight_table(method, eps_low, eps_high, clip_c)


def formula(branch: Branch, ws: list[float], clip_c: float) -> str:
    """The weights of one branch as the first of 0, 1, c, r, 1/r, rbar (the mean ratio of the token's
    completion) that fits every probe, else as numbers."""
    i, j = branch.token
    for name, f in (("0", lambda r, rbar: 0.0), ("1", lambda r, rbar: 1.0), ("c", lambda r, rbar: clip_c),
                    ("r", lambda r, rbar: r), ("1/r", lambda r, rbar: 1 / r), ("rbar", lambda r, rbar: rbar)):
        want = [f(p[i, j].item(), (p[i] * MASK[i]).sum().item() / MASK[i].sum().item()) for p in branch.probes]
        if all(abs(w - x) <= TOLERANCE for w, x in zip(ws, want)):
            return name
    return numbers(ws)


def numbers(xs) -> str:
    return ", ".join(f"{x + 0.0:.4g}" for x in xs)  # + 0.0: no "-0"


def differences(a, b) -> list[float]:
    """Per branch of two weight tables, the largest |w difference| over its probes (inf where one is not finite)."""
    return [max(abs(x - y) if math.isfinite(x) and math.isfinite(y) else math.inf for x, y in zip(xs, ys))
            for (_, xs), (_, ys) in zip(a, b)]


def differing(a, b) -> int:
    return sum(d > TOLERANCE for d in differences(a, b))


def largest_difference(a, b) -> float:
    return max(differences(a, b))


def report(spec, measured, tables, reference, clip) -> tuple[list[str], list[str]]:
    """The table's lines and the mismatch lines ("A > 0, 1/c <= r < 1-eps_low: w = r, aspo expects 1/r")."""
    c = clip["clip_c"]
    lines = [f"{spec} against {reference} (eps_low {clip['eps_low']}, eps_high {clip['eps_high']}, c {c}): "
             f"per-token weight w (ASPO.md §3), relative to the same function at r = 1",
             f"{'branch':44s} {'probe r':15s} {'measured w':22s} {reference + ' w':22s} verdict"]
    mismatches = []
    for (branch, ws), (_, ref) in zip(measured, tables[reference]):
        ok = all(abs(w - x) <= TOLERANCE for w, x in zip(ws, ref))  # False for nan
        got, want = formula(branch, ws, c), formula(branch, ref, c)
        probe_r = ", ".join(f"{p[branch.token].item():.3g}" for p in branch.probes)
        values = lambda name, xs: name if name in ("0", "1") or "," in name else f"{name} = {numbers(xs)}"
        lines.append(f"{branch.name:44s} {probe_r:15s} {values(got, ws):22s} {values(want, ref):22s} "
                     f"{'ok' if ok else 'MISMATCH'}")
        if not ok:
            mismatches.append(f"{branch.name}: w = {got}, {reference} expects {want}")
    # closest: the fewest differing branches, then the smallest largest difference (a loss that is GRPO on
    # one side and ASPO on the other is named by the side that matches, not by the size of the other's gap)
    closest = min(REFERENCES, key=lambda m: (differing(measured, tables[m]), largest_difference(measured, tables[m])))
    lines.append(f"closest built-in method: {closest} ({differing(measured, tables[closest])} of {len(measured)} "
                 f"branches differ, largest |w difference| {largest_difference(measured, tables[closest]):.3g})")
    return lines, mismatches


def plot(spec, reference, path, clip):
    """w(r) of the function beside the reference's, drawn as the README's weight figure is drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from integrations.weight_figure import plot_weights
    plot_weights(path, plt, **clip, methods=tuple(dict.fromkeys((spec, reference))))


def check(function: str, reference: str, clip: dict):
    """function (FILE.py:FUNCTION or a built-in method) weighed against reference: (its weight table, every
    reference's table, report's lines, report's mismatch lines). ValueError, one line, for bad input: flags out
    of range, a loss that cannot be loaded or called as verl calls it, or one without a weight at r = 1."""
    na.Config(**clip).validate()  # the same ranges as nano_aspo.py's flags
    if function not in REFERENCES and ".py:" not in function:
        raise ValueError(f"{function}: expected FILE.py:FUNCTION or one of {', '.join(REFERENCES)}")
    if ".py:" in function:
        register_user_loss(function, na.USER_LOSSES)
    try:
        measured = weight_table(function, **clip)
    except (ValueError, RuntimeError) as e:  # RuntimeError: autograd on a malformed graph
        raise ValueError(f"{function}: {e if isinstance(e, ValueError) else one_line(e)}") from None
    tables = {m: reference_table(m, **clip) for m in REFERENCES}
    return (measured, tables) + report(function, measured, tables, reference, clip)


def main(argv=None) -> int:
    defaults = na.Config()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("function", metavar="FILE.py:FUNCTION",
                   help="a verl-style policy loss (keyword arguments old_log_prob, log_prob, advantages, "
                        "response_mask, and loss_agg_mode, config, rollout_is_weights where it takes them), or the "
                        f"name of a built-in method ({', '.join(REFERENCES)}) to compare two of them")
    p.add_argument("--reference", default="aspo", choices=REFERENCES, help="the method whose weights are expected")
    p.add_argument("--eps-low", type=float, default=defaults.eps_low,
                   help="lower clip range (verl: clip_ratio_low; clip_ratio gets it too)")
    p.add_argument("--eps-high", type=float, default=defaults.eps_high, help="upper clip range (verl: clip_ratio_high)")
    p.add_argument("--clip-c", type=float, default=defaults.clip_c, help="dual-clip constant c (verl: clip_ratio_c)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the function's w(r) beside the reference's "
                                                      "(one-token completions; needs matplotlib)")
    a = p.parse_args(argv)
    clip = {"eps_low": a.eps_low, "eps_high": a.eps_high, "clip_c": a.clip_c}
    try:
        measured, _, lines, mismatches = check(a.function, a.reference, clip)
        print("\n".join(lines))
        if a.plot:
            plot(a.function, a.reference, a.plot, clip)
    except (ValueError, ImportError, OSError) as e:
        print(f"check_loss.py: error: {e}", file=sys.stderr)
        return 2
    if mismatches:
        print(f"{len(mismatches)} of {len(measured)} branches differ from {a.reference}:")
        print("\n".join(mismatches))
        return 1
    print(f"all {len(measured)} branches match {a.reference} within {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Task 4 of exercises/README.md: |log r| on the first and the last update of every batch,
on-policy and with stale rollouts.

    python exercises/ratio.py                  # grpo, seed 0, lags 0 and 8, 12 steps of mu = 32
    python exercises/ratio.py --minibatches 1 --epochs 1   # mu = 1: one update per batch

It trains as nano_aspo.py does (any of its flags; one method and one seed) and prints, per step, the
mean |log r| over the batch's valid tokens on update 1 and on update mu, r = pi_theta / pi_old
with pi_old the weights that sampled the batch (the sampler anchor, ASPO.md §2 and §12). The
numbers are the ratios the loss itself sees: nano_aspo.ratio_metrics is called once per update
with them, and this script keeps its |log r| (the core logs only the mean over the mu updates and
the last one; the first is the point of the exercise).
"""
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
import nano_aspo as na  # noqa: E402
from config import parse_config  # noqa: E402

# what the script measures, and a small held-out set: the evaluation is not its point
DEFAULTS = ["--methods", "grpo", "--seeds", "0", "--rollout-lag", "0,8", "--steps", "12",
            "--eval-problems", "20", "--curve-problems", "20", "--eval-samples", "8",
            "--quiet", "--out-dir", "out/ratio"]


def fail(message: str, status: int = 2) -> int:
    print(f"ratio.py: error: {message}", file=sys.stderr)
    return status


def record_updates(argv) -> tuple[int, list[list[tuple[float, float]]]]:
    """nano_aspo.main(argv) with its output hidden: (its exit status, one list per update call of
    the loss with each member's (mean |log r|, clipped share)). The clipped share is that of valid
    tokens outside [1 - eps_low, 1 + eps_high], where GRPO's clip acts on one sign of A or the
    other (§4): the "clip fraction" trainers log."""
    calls, real = [], na.ratio_metrics

    def spy(ratio, A, mask, eps_low, eps_high, *rest):
        metrics = real(ratio, A, mask, eps_low, eps_high, *rest)
        valid = mask > 0
        out = ((ratio < 1 - eps_low) | (ratio > 1 + eps_high)) & valid
        clipped = (out.sum((-2, -1)) / valid.sum((-2, -1)).clamp(min=1)).tolist()
        calls.append(list(zip(metrics["abs_log_ratio"], clipped)))
        return metrics

    na.ratio_metrics = spy
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            status = na.main(argv)
    finally:
        na.ratio_metrics = real
    return status, calls


def table(calls, lags, steps, mu) -> list[str]:
    """The lines: a row per step with, for each lag, |log r| and the clipped share on update 1
    and on update mu of that step's batch."""
    lines = ["step " + "".join(f" | lag {lag:<29d}" for lag in lags),
             "     " + "".join(f" | {'update 1':16s}{f'update {mu}':16s}" for _ in lags),
             "     " + " | |log r|   clip  |log r|   clip   " * len(lags)]
    for step in range(steps):
        first, last = calls[step * mu], calls[step * mu + mu - 1]
        lines.append(f"{step + 1:4d} " + "".join(
            " | {:7.4f} {:6.3f}  {:7.4f} {:6.3f}  ".format(*first[i], *last[i])
            for i in range(len(lags))))
    return lines


def main(argv=None) -> int:
    argv = DEFAULTS + list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse_config(argv, na.METHODS, __doc__.split("\n")[0])
    except ValueError as e:
        return fail(e)
    if len(cfg.method_list) > 1 or len(cfg.seed_list) > 1 or not cfg.batch_seeds:
        return fail("one method and one seed, batched (each update then holds every lag once); "
                    f"got --methods {cfg.methods} --seeds {cfg.seeds}")
    if not cfg.steps:
        return fail("--steps must be at least 1: there is no update to measure")
    status, calls = record_updates(argv)
    if status:
        return status  # nano_aspo.py's error is on stderr
    lags, mu = cfg.lag_list, cfg.mu
    if len(calls) != cfg.steps * mu or any(len(c) != len(lags) for c in calls):
        return fail(f"saw {len(calls)} loss calls, expected {cfg.steps} steps x mu {mu} with "
                    f"{len(lags)} members each: has nano_aspo.rl_step changed?", 1)
    print(f"|log r| = |log pi_theta / pi_old|, mean over a batch's valid tokens: {cfg.methods}, "
          f"seed {cfg.seeds}, mu = {mu} updates per batch, lr {cfg.lr}; pi_old sampled the batch "
          f"(lag L: the weights after step t-1-L, the start until then)")
    print("\n".join(table(calls, lags, cfg.steps, mu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The statistics of a yes/no outcome per seed (ASPO.md §10): Wilson interval, exact McNemar test, the lock-in
flag, and the share and paired comparison built on them."""
import pytest

from stats import (LOCKIN_CAREFUL_HARD, locked_in, lockin_share, mcnemar_exact, paired_lockin,
                               wilson_interval)


@pytest.mark.parametrize("k,n,want", [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0)),
                                      (4, 8, (0.2152, 0.7848)), (16, 32, (0.3363, 0.6637)), (1, 20, (0.0089, 0.2361))])
def test_wilson_interval_textbook_values(k, n, want):
    assert wilson_interval(k, n) == pytest.approx(want, abs=1e-4)


def test_wilson_interval_wider_with_larger_z_and_uninformative_without_runs():
    lo95, hi95 = wilson_interval(3, 10)
    lo99, hi99 = wilson_interval(3, 10, z=2.576)
    assert lo99 < lo95 < 0.3 < hi95 < hi99
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("b,c,want", [(0, 6, 0.03125), (6, 0, 0.03125), (1, 6, 0.125), (0, 0, 1.0), (3, 3, 1.0),
                                      (0, 1, 1.0), (2, 10, 2 * (1 + 12 + 66) / 2 ** 12)])
def test_mcnemar_exact_known_values(b, c, want):
    assert mcnemar_exact(b, c) == pytest.approx(want, abs=1e-12)


def test_locked_in_is_a_careful_hard_share_below_the_threshold():
    assert LOCKIN_CAREFUL_HARD == 0.2
    assert locked_in({"careful_hard": 0.0}) and locked_in({"careful_hard": 0.19})
    assert not locked_in({"careful_hard": 0.2}) and not locked_in({"careful_hard": 0.9})


def _runs(shares: dict) -> list[dict]:
    """Runs with a final careful_hard share per (method, seed); None for a run that did not finish."""
    return [{"method": m, "seed": s, "final": None if v is None else {"careful_hard": v}} for (m, s), v in shares.items()]


def test_lockin_share_counts_finished_runs_with_a_wilson_interval():
    runs = _runs({("grpo", 0): 0.0, ("grpo", 1): 0.1, ("grpo", 2): 0.8, ("grpo", 3): 0.05, ("grpo", 4): None,
                  ("aspo", 0): 0.9})
    got = lockin_share(runs, "grpo")
    assert (got["locked"], got["n"], got["share"]) == (3, 4, 0.75)
    assert got["wilson95"] == wilson_interval(3, 4)
    assert lockin_share(runs, "nois")["share"] is None


def test_paired_lockin_counts_discordant_seeds():
    # seeds 0-5: aspo escapes where grpo locks in on 0, 1, 2, 3; both lock in on 4; only aspo locks in on 5;
    # seed 6 has no aspo run, seed 7's aspo run did not finish: neither is paired
    runs = _runs({**{("grpo", s): v for s, v in enumerate([0.0, 0.1, 0.0, 0.1, 0.0, 0.9, 0.0, 0.0])},
                  **{("aspo", s): v for s, v in enumerate([0.9, 0.8, 0.5, 0.7, 0.1, 0.0])}, ("aspo", 7): None})
    got = paired_lockin(runs, "aspo", "grpo")
    assert got["seeds"] == [0, 1, 2, 3, 4, 5]
    assert (got["b"], got["c"]) == (1, 4)
    assert got["diff"] == pytest.approx(2 / 6 - 5 / 6)  # share locked in: aspo 2/6, grpo 5/6
    assert got["p"] == pytest.approx(2 * (1 + 5) / 2 ** 5)  # C(5, 0) + C(5, 1)
    assert paired_lockin(runs, "nois", "grpo")["diff"] is None


def test_t_quantile_and_interval_on_textbook_values():
    from stats import t_interval, t_quantile
    for df, want in ((1, 12.706), (7, 2.365), (31, 2.040), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(want, abs=1e-3)
    lo, hi = t_interval([0.1, 0.2, 0.3])  # mean 0.2, sd 0.1, n 3: 0.2 +- 4.303 * 0.1 / sqrt(3)
    assert lo == pytest.approx(0.2 - 0.24843, abs=1e-4) and hi == pytest.approx(0.2 + 0.24843, abs=1e-4)
    assert t_interval([0.5]) is None

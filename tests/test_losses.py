import math

import pytest
import torch

import nano_aspo as na


def policy_loss(method, logp, old, A, mask, *clip):
    """nano_aspo.policy_loss with an entropy that is equal on every token: the entropy-split methods then
    clip every token with the eps passed (no token above its row's 0.8 quantile), so they are grpo, grpo
    with the soft negative dual-clip, and aspo here; tests/test_losses_shipped.py varies the entropy."""
    return na.policy_loss(method, logp, old, A, mask, *clip, entropy=torch.zeros_like(logp))

EPS_LOW, EPS_HIGH, C = 0.2, 0.28, 3.0
RATIOS = {"below_1/c": 0.2, "between_1/c_and_1-eps_low": 0.6, "inside_below_1": 0.9, "inside_above_1": 1.1,
          "above_1+eps_high": 2.0, "above_c": 4.0}


# m2po's weight depends on the other tokens of the batch (its second-moment budget): it has its own
# per-branch tests in tests/test_peers.py
TOKEN_WISE = tuple(m for m in na.METHODS if m != "m2po")


def expected_w(method, A, r):
    """The per-token weights of ASPO.md §4 (grpo), §5 (aspo), and the no-IS ablation; the entropy-split
    methods at equal entropies (every token narrow: the eps passed); the split rungs and the peers of §13
    (peers.py) at its default eps_max 5 and bounds [0.5, 5]."""
    grpo = (r if r <= 1 + EPS_HIGH else 0.0) if A > 0 else (r if 1 - EPS_LOW <= r <= C else 0.0)
    if method == "cispo":
        return min(r, 5.0)
    if method == "cispo-verl":
        return min(max(r, 1 - EPS_LOW), 1 + EPS_HIGH)
    if method == "icepop":
        return grpo if 0.5 <= r <= 5.0 else 0.0
    if A > 0 and ((method == "aspo-fall" and r >= 1) or (method == "aspo-rise" and r < 1)):
        return grpo  # the half of the flip this rung leaves to grpo's r
    if method in ("grpo", "posmean", "grpo-ent"):
        return grpo  # posmean: a row of equal ratios has rbar = r, so its weights are grpo's
    if method == "nois":
        return 1.0 if grpo != 0.0 else 0.0
    if (method == "aspo-hardneg" and A < 0) or (method == "grpo-ent-softneg" and A > 0):
        return grpo
    if A > 0:  # aspo's flip and soft dual-clip (aspo, aspo-ref, aspo-hardneg)
        return C if r < 1 / C else (1 / r if r <= 1 + EPS_HIGH else 0.0)
    return C if r > C else (r if r >= 1 - EPS_LOW else 0.0)  # aspo's negative side (and grpo-ent-softneg's)


# the table, written out by hand from ASPO.md (so that expected_w itself is checked)
HAND = {
    ("grpo", 1): [0.2, 0.6, 0.9, 1.1, 0.0, 0.0], ("grpo", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 0.0],
    ("aspo", 1): [3.0, 1 / 0.6, 1 / 0.9, 1 / 1.1, 0.0, 0.0], ("aspo", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 3.0],
    ("nois", 1): [1.0, 1.0, 1.0, 1.0, 0.0, 0.0], ("nois", -1): [0.0, 0.0, 1.0, 1.0, 1.0, 0.0],
    ("posmean", 1): [0.2, 0.6, 0.9, 1.1, 0.0, 0.0], ("posmean", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 0.0],
    ("aspo-hardneg", 1): [3.0, 1 / 0.6, 1 / 0.9, 1 / 1.1, 0.0, 0.0], ("aspo-hardneg", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 0.0],
    ("grpo-ent", 1): [0.2, 0.6, 0.9, 1.1, 0.0, 0.0], ("grpo-ent", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 0.0],
    ("grpo-ent-softneg", 1): [0.2, 0.6, 0.9, 1.1, 0.0, 0.0], ("grpo-ent-softneg", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 3.0],
    ("aspo-ref", 1): [3.0, 1 / 0.6, 1 / 0.9, 1 / 1.1, 0.0, 0.0], ("aspo-ref", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 3.0],
    ("aspo-fall", 1): [3.0, 1 / 0.6, 1 / 0.9, 1.1, 0.0, 0.0], ("aspo-fall", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 3.0],
    ("aspo-rise", 1): [0.2, 0.6, 0.9, 1 / 1.1, 0.0, 0.0], ("aspo-rise", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 3.0],
    ("cispo", 1): [0.2, 0.6, 0.9, 1.1, 2.0, 4.0], ("cispo", -1): [0.2, 0.6, 0.9, 1.1, 2.0, 4.0],
    ("cispo-verl", 1): [0.8, 0.8, 0.9, 1.1, 1.28, 1.28], ("cispo-verl", -1): [0.8, 0.8, 0.9, 1.1, 1.28, 1.28],
    ("icepop", 1): [0.0, 0.6, 0.9, 1.1, 0.0, 0.0], ("icepop", -1): [0.0, 0.0, 0.9, 1.1, 2.0, 0.0],
}


def test_expected_table_matches_hand_table():
    assert {m for m, _ in HAND} == set(TOKEN_WISE)  # every token-wise method has its hand row
    for (method, sign), ws in HAND.items():
        for r, w in zip(RATIOS.values(), ws):
            assert expected_w(method, sign, r) == pytest.approx(w)


def weights(method, logp, old, A, mask):
    """The per-token weights of policy_loss by the one probe, nano_aspo.token_weights, at this file's clip range."""
    return na.token_weights(method, logp, old, A, mask, entropy=torch.zeros_like(logp), eps_low=EPS_LOW,
                            eps_high=EPS_HIGH, clip_c=C)


def test_posmean_weights_each_positive_token_by_its_completions_mean_ratio():
    # rows of unequal ratios: a positive row's tokens all get rbar (over valid tokens), except where their
    # own r is above 1 + eps_high (weight 0); negative rows are grpo's per-token weights
    rs = torch.tensor([[0.5, 1.1, 2.0, 0.9], [0.5, 1.1, 2.0, 0.9]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    old = torch.full((2, 4), -1.0)
    rbar = (0.5 + 1.1 + 2.0) / 3
    w = torch.tensor([[rbar, rbar, 0.0, 0.0], [0.0, 1.1, 2.0, 0.9]])
    torch.testing.assert_close(weights("posmean", old + rs.log(), old, torch.tensor([1.5, -1.5]), mask), w,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", TOKEN_WISE)
@pytest.mark.parametrize("A", [0.7, -0.7, 2.0, -1.5])
@pytest.mark.parametrize("region", list(RATIOS))
def test_gradient_weight_per_branch(method, A, region):
    r = RATIOS[region]
    old = torch.full((2, 3), -1.3)
    logp, adv, mask = old + math.log(r), torch.full((2,), A), torch.ones(2, 3)
    assert torch.isfinite(policy_loss(method, logp, old, adv, mask, EPS_LOW, EPS_HIGH, C)[0])
    torch.testing.assert_close(weights(method, logp, old, adv, mask), torch.full((2, 3), expected_w(method, A, r)),
                               atol=1e-5, rtol=1e-5)


def test_mixed_batch_each_token_gets_its_own_weight():
    # one batch with every (sign, region) combination: weights are per token, N counts all valid tokens
    rs = list(RATIOS.values())
    A = torch.tensor([1.3, -0.6])
    old = torch.linspace(-2.0, -0.5, 2 * len(rs)).view(2, len(rs))
    for method in set(TOKEN_WISE) - {"posmean"}:  # posmean's weight is per completion (its own test above)
        want = torch.tensor([[expected_w(method, a, r) for r in rs] for a in A.tolist()])
        torch.testing.assert_close(weights(method, old + torch.log(torch.tensor(rs)), old, A, torch.ones_like(old)),
                                   want, atol=1e-5, rtol=1e-5)


def test_ratio_one_all_methods_agree():
    # on-policy (r = 1): every method's weight is 1 on every valid token with A != 0 (§2)
    gen = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 5, generator=gen) * 3
    A = torch.tensor([1.0, -0.5, 0.0, 2.0])
    mask = torch.ones(4, 5)
    mask[1, 3:] = 0
    want = mask * (A != 0)[:, None]
    for method in na.METHODS:
        assert policy_loss(method, old, old, A, mask, EPS_LOW, EPS_HIGH, C)[1]["abs_log_ratio"] == 0.0
        torch.testing.assert_close(weights(method, old, old, A, mask), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", na.METHODS)
def test_masked_tokens_get_exactly_zero_weight(method):
    gen = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 6, generator=gen) * 3
    logp = (old + torch.randn(3, 6, generator=gen) * 2).clone()
    logp[0, 5] = old[0, 5] + 50.0  # extreme ratio on a masked token (clamped to e^20)
    logp[2, 4] = old[2, 4] - 50.0
    mask = torch.ones(3, 6)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    A = torch.tensor([1.0, -1.0, 0.5])
    assert torch.isfinite(policy_loss(method, logp, old, A, mask, EPS_LOW, EPS_HIGH, C)[0])
    w = weights(method, logp, old, A, mask)
    assert (w[mask == 0] == 0).all() and (w[mask == 1] != 0).any()


def test_zero_advantage_gives_a_zero_loss_and_zero_weights():
    old = torch.full((2, 3), -1.3)
    for method in na.METHODS:
        for r in RATIOS.values():
            logp = old + math.log(r)
            assert policy_loss(method, logp, old, torch.zeros(2), torch.ones(2, 3), EPS_LOW, EPS_HIGH, C)[0].item() == 0.0
            assert (weights(method, logp, old, torch.zeros(2), torch.ones(2, 3)) == 0).all()


def _loss_value(method, A, r, old=-1.0):
    logp = torch.tensor([[old + math.log(r)]])
    loss, _ = policy_loss(method, logp, torch.tensor([[old]]), torch.tensor([A]), torch.ones(1, 1), EPS_LOW, EPS_HIGH, C)
    return loss.item(), logp.item()


def test_hand_computed_loss_values():
    assert _loss_value("grpo", 1.0, 1.1)[0] == pytest.approx(-1.1, abs=1e-5)
    assert _loss_value("grpo", 1.0, 2.0)[0] == pytest.approx(-1.28, abs=1e-5)  # clipped at 1 + eps_high
    assert _loss_value("grpo", -1.0, 0.5)[0] == pytest.approx(0.8, abs=1e-5)  # clipped at 1 - eps_low
    assert _loss_value("grpo", -1.0, 2.0)[0] == pytest.approx(2.0, abs=1e-5)
    assert _loss_value("grpo", -1.0, 4.0)[0] == pytest.approx(3.0, abs=1e-5)  # dual-clip: -c A
    assert _loss_value("aspo", 1.0, 1.1)[0] == pytest.approx(-1 / 1.1, abs=1e-5)
    assert _loss_value("aspo", 2.0, 0.5)[0] == pytest.approx(-2.0 / 0.5, abs=1e-5)
    assert _loss_value("aspo", 1.0, 2.0)[0] == pytest.approx(-1 / 1.28, abs=1e-5)
    value, logp = _loss_value("aspo", 1.0, 0.2)  # below 1/c: -A c logp
    assert value == pytest.approx(-1.0 * C * logp, abs=1e-5)
    value, logp = _loss_value("aspo", -0.5, 4.0)  # above c with A < 0: -A c logp
    assert value == pytest.approx(0.5 * C * logp, abs=1e-5)
    assert _loss_value("nois", 1.0, 1.1)[0] == pytest.approx(-1.0, abs=1e-6)
    assert _loss_value("nois", -1.0, 4.0)[0] == pytest.approx(0.0, abs=1e-6)


def test_loss_is_token_mean_over_the_mask():
    old = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    rs = torch.tensor([[1.1, 0.9, 7.0], [1.0, 1.2, 0.3]])
    logp = old + rs.log()
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, _ = policy_loss("grpo", logp, old, torch.tensor([1.0, -2.0]), mask, EPS_LOW, EPS_HIGH, C)
    # row 0 (A=1): -1.1, -0.9 (third masked); row 1 (A=-2): 2*1.0, 2*1.2, 2*max(0.3, 0.8)
    want = (-1.1 - 0.9 + 2.0 + 2.4 + 1.6) / 5
    assert loss.item() == pytest.approx(want, abs=1e-5)


def test_empty_mask_is_finite():
    logp = torch.zeros(2, 3)
    loss, m = policy_loss("aspo", logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.zeros(2, 3))
    assert loss.item() == 0.0
    assert m["abs_log_ratio"] == 0.0


def test_unknown_method_raises():
    with pytest.raises(ValueError):
        policy_loss("ppo", torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2))


def test_metrics_fractions_on_a_constructed_example():
    # row 0, A > 0: ratios 0.2, 0.9, 1.5, 2.0; row 1, A < 0: 0.5, 1.0, 4.0 and a masked token with ratio 100
    rs = torch.tensor([[0.2, 0.9, 1.5, 2.0], [0.5, 1.0, 4.0, 100.0]])
    old = torch.full((2, 4), -2.0)
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])
    _, m = policy_loss("grpo", old + rs.log(), old, torch.tensor([1.0, -1.0]), mask, EPS_LOW, EPS_HIGH, C)
    approx = lambda x: pytest.approx(x, abs=1e-6)
    assert m["clip_high_pos"] == approx(2 / 4)
    assert m["clip_low_pos"] == approx(1 / 4)
    assert m["clip_dual_pos"] == approx(1 / 4)
    assert m["below1_pos"] == approx(2 / 4)
    assert m["clip_high_neg"] == approx(1 / 3)
    assert m["clip_low_neg"] == approx(1 / 3)
    assert m["clip_dual_neg"] == approx(1 / 3)
    assert m["below1_neg"] == approx(1 / 3)
    assert m["ratio_min_pos"] == approx(0.2) and m["ratio_max_pos"] == pytest.approx(2.0, rel=1e-5)
    assert m["ratio_max_neg"] == pytest.approx(4.0, rel=1e-5)  # the masked 100 is not counted
    assert m["ratio_mean_neg"] == pytest.approx(5.5 / 3, rel=1e-5)
    valid = [0.2, 0.9, 1.5, 2.0, 0.5, 1.0, 4.0]
    assert m["abs_log_ratio"] == pytest.approx(sum(abs(math.log(r)) for r in valid) / 7, rel=1e-5)
    # all methods report the same metrics
    for method in ("aspo", "nois"):
        _, m2 = policy_loss(method, old + rs.log(), old, torch.tensor([1.0, -1.0]), mask, EPS_LOW, EPS_HIGH, C)
        assert m2 == m


def test_metrics_omit_a_sign_that_is_absent():
    old = torch.zeros(2, 3)
    _, m = policy_loss("grpo", old, old, torch.tensor([1.0, 0.5]), torch.ones(2, 3))
    assert "clip_high_pos" in m and "clip_high_neg" not in m


# --- advantages (§1) -------------------------------------------------------------------------
def test_group_advantages_std_normalized():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                      [0.3, 2.0, -1.0, 0.5]])
    a = na.group_advantages(r, use_std=True)
    assert a.shape == r.shape
    torch.testing.assert_close(a.mean(dim=1), torch.zeros(5), atol=1e-6, rtol=0)
    live = a[[0, 1, 4]]
    torch.testing.assert_close(live.std(dim=1), torch.ones(3), atol=1e-4, rtol=0)  # sample std, as §1
    assert (a[2] == 0).all() and (a[3] == 0).all()
    # one correct in four: A = (1 - 0.25) / std, std = sqrt(0.25) (unbiased: 0.75*0.25*4/3)
    assert a[1, 3].item() == pytest.approx(0.75 / 0.5, abs=1e-4)
    assert a[1, 0].item() == pytest.approx(-0.25 / 0.5, abs=1e-4)


def test_group_advantages_without_std_is_centered():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    a = na.group_advantages(r, use_std=False)
    torch.testing.assert_close(a, r - r.mean(dim=1, keepdim=True), atol=0, rtol=0)
    assert a[1].tolist() == [-0.25, -0.25, -0.25, 0.75]

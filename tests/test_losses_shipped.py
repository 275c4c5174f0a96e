"""The shipped loss taken apart (ASPO.md §5): the entropy-split clip, the rungs grpo-ent, grpo-ent-softneg and
aspo-ref, and the k3 KL. Weights are read by autograd through na.token_weights (§3) and compared with a hand
table; which tokens got the wide clip is recomputed independently with numpy's percentile."""
import math

import numpy as np
import pytest
import torch

import nano_aspo as na

EPS_LOW, EPS_HIGH, C, WIDE = 0.2, 0.28, 3.0, 0.4
CLIP = {"eps_low": EPS_LOW, "eps_high": EPS_HIGH, "clip_c": C}
# 0.7 and 1.3 lie between the narrow clip (0.8, 1.28) and the wide one (0.6, 1.4): they tell the two apart
RATIOS = (0.2, 0.5, 0.7, 0.9, 1.1, 1.3, 2.0, 4.0)
# w at each of RATIOS, by (method, sign of A, clip of the token), written out by hand from ASPO.md §4-§5
HAND = {
    ("grpo-ent", 1, "narrow"): [0.2, 0.5, 0.7, 0.9, 1.1, 0.0, 0.0, 0.0],
    ("grpo-ent", 1, "wide"): [0.2, 0.5, 0.7, 0.9, 1.1, 1.3, 0.0, 0.0],
    ("grpo-ent", -1, "narrow"): [0.0, 0.0, 0.0, 0.9, 1.1, 1.3, 2.0, 0.0],
    ("grpo-ent", -1, "wide"): [0.0, 0.0, 0.7, 0.9, 1.1, 1.3, 2.0, 0.0],
    ("grpo-ent-softneg", 1, "narrow"): [0.2, 0.5, 0.7, 0.9, 1.1, 0.0, 0.0, 0.0],
    ("grpo-ent-softneg", 1, "wide"): [0.2, 0.5, 0.7, 0.9, 1.1, 1.3, 0.0, 0.0],
    ("grpo-ent-softneg", -1, "narrow"): [0.0, 0.0, 0.0, 0.9, 1.1, 1.3, 2.0, 3.0],
    ("grpo-ent-softneg", -1, "wide"): [0.0, 0.0, 0.7, 0.9, 1.1, 1.3, 2.0, 3.0],
    ("aspo-ref", 1, "narrow"): [3.0, 2.0, 1 / 0.7, 1 / 0.9, 1 / 1.1, 0.0, 0.0, 0.0],
    ("aspo-ref", 1, "wide"): [3.0, 2.0, 1 / 0.7, 1 / 0.9, 1 / 1.1, 1 / 1.3, 0.0, 0.0],
    ("aspo-ref", -1, "narrow"): [0.0, 0.0, 0.0, 0.9, 1.1, 1.3, 2.0, 3.0],
    ("aspo-ref", -1, "wide"): [0.0, 0.0, 0.7, 0.9, 1.1, 1.3, 2.0, 3.0],
}


def narrow_by_numpy(entropy: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """True where a token's entropy is <= the 0.8 quantile (numpy's linear method) of its row's valid tokens."""
    h, valid = entropy.numpy(), mask.numpy() > 0
    out = np.zeros(h.shape, dtype=bool)
    for i in range(h.shape[0]):
        if valid[i].any():
            out[i] = h[i] <= np.percentile(h[i][valid[i]], 80, method="linear")
    return out


def batch(rows=64, seed=0):
    """rows completions of len(RATIOS) tokens, each row a permutation of RATIOS, signs alternating, random
    entropies, random valid lengths (1 to all), and one row without valid tokens."""
    gen = torch.Generator().manual_seed(seed)
    T = len(RATIOS)
    idx = torch.stack([torch.randperm(T, generator=gen) for _ in range(rows)])  # (B, T): which ratio each token has
    old = -torch.rand(rows, T, generator=gen, dtype=torch.float64) * 3
    logp = old + torch.tensor(RATIOS, dtype=torch.float64).log()[idx]
    A = torch.tensor([1.3, -0.7] * (rows // 2), dtype=torch.float64)
    entropy = torch.rand(rows, T, generator=gen, dtype=torch.float64) * 2
    lengths = torch.randint(1, T + 1, (rows,), generator=gen)
    lengths[-1] = 0
    mask = (torch.arange(T) < lengths[:, None]).double()
    return idx, logp, old, A, mask, entropy


def test_entropy_split_eps_matches_numpy_percentile():
    _, _, _, _, mask, entropy = batch(seed=3)
    lo, hi = na.entropy_split_eps(entropy, mask, EPS_LOW, EPS_HIGH)
    narrow = torch.from_numpy(narrow_by_numpy(entropy, mask))
    valid = mask > 0
    assert torch.isfinite(lo).all() and torch.isfinite(hi).all()
    assert (lo[valid] == torch.where(narrow, EPS_LOW, WIDE).double()[valid]).all()
    assert (hi[valid] == torch.where(narrow, EPS_HIGH, WIDE).double()[valid]).all()
    share_wide = 1 - narrow[valid].double().mean().item()
    assert 0.05 < share_wide < 0.3  # about the top fifth by entropy (less in short rows)


@pytest.mark.parametrize("method", na.ENTROPY_METHODS)
def test_weight_of_every_branch_by_autograd(method):
    idx, logp, old, A, mask, entropy = batch()
    w = na.token_weights(method, logp, old, A, mask, entropy=entropy, **CLIP)
    narrow = narrow_by_numpy(entropy, mask)
    want = torch.zeros_like(w)
    seen = set()
    for i in range(w.size(0)):
        sign = 1 if A[i] > 0 else -1
        for t in range(w.size(1)):
            if mask[i, t] > 0:
                cls = "narrow" if narrow[i, t] else "wide"
                want[i, t] = HAND[method, sign, cls][idx[i, t]]
                seen.add((sign, cls, int(idx[i, t])))
    assert len(seen) == 2 * 2 * len(RATIOS)  # every branch, at both clips, is in the batch
    torch.testing.assert_close(w, want, atol=1e-9, rtol=1e-7)


def test_each_rung_changes_one_thing():
    # with every token on the passed eps (the rung's split made flat), the rungs are grpo, grpo with aspo's
    # negatives, and aspo; grpo-ent-softneg differs from grpo-ent only on negatives above c
    _, logp, old, A, mask, entropy = batch(seed=1)
    flat = {"eps_low": WIDE, "eps_high": WIDE, "clip_c": C}
    w = {m: na.token_weights(m, logp, old, A, mask, entropy=entropy, **flat) for m in na.METHODS}
    torch.testing.assert_close(w["grpo-ent"], w["grpo"], atol=1e-12, rtol=0)
    torch.testing.assert_close(w["aspo-ref"], w["aspo"], atol=1e-12, rtol=0)
    torch.testing.assert_close(w["grpo-ent-softneg"], torch.where(A[:, None] > 0, w["grpo"], w["aspo"]), atol=1e-12, rtol=0)
    ratio = (logp - old).exp()
    differs = (w["grpo-ent-softneg"] != w["grpo-ent"]) & (mask > 0)
    assert differs.any() and ((A[:, None] < 0) & (ratio > C))[differs].all()


def test_constant_entropy_keeps_every_token_on_the_passed_eps():
    _, logp, old, A, mask, _ = batch(seed=2)
    same = torch.full_like(logp, 0.5)  # every token equals its row's quantile: <= holds
    for method, plain in (("grpo-ent", "grpo"), ("aspo-ref", "aspo")):
        torch.testing.assert_close(na.token_weights(method, logp, old, A, mask, entropy=same, **CLIP),
                                   na.token_weights(plain, logp, old, A, mask, **CLIP), atol=1e-12, rtol=0)


def test_methods_without_the_split_ignore_entropy():
    _, logp, old, A, mask, entropy = batch(seed=4)
    for method in set(na.METHODS) - set(na.ENTROPY_METHODS):
        with_h, m1 = na.policy_loss(method, logp, old, A, mask, **CLIP, entropy=entropy)
        without, m2 = na.policy_loss(method, logp, old, A, mask, **CLIP)
        assert with_h.item() == without.item() and m1 == m2


def test_ratio_one_every_method_gives_the_same_gradient():
    # the mu = 1 control (§10): at r = 1 every weight is 1, whatever the clip, so all methods coincide
    _, _, old, A, mask, entropy = batch(seed=5)
    want = -A[:, None] * mask / mask.sum()
    for method in na.METHODS:
        logp = old.clone().requires_grad_(True)
        loss, m = na.policy_loss(method, logp, old, A, mask, **CLIP, entropy=entropy)
        loss.backward()
        torch.testing.assert_close(logp.grad, want, atol=1e-12, rtol=0, msg=method)
        assert m["abs_log_ratio"] == 0.0


@pytest.mark.parametrize("method", na.ENTROPY_METHODS)
def test_missing_entropy_is_a_one_line_error_naming_the_method(method):
    _, logp, old, A, mask, _ = batch(rows=2)
    for call in (na.policy_loss, na.token_weights):
        with pytest.raises(ValueError, match=f"^{method} needs the per-token entropy") as e:
            call(method, logp, old, A, mask)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("method", na.ENTROPY_METHODS)
def test_rows_without_valid_tokens_stay_finite(method):
    logp = torch.tensor([[0.3, -0.2, 0.1], [5.0, -5.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    loss, m = na.policy_loss(method, logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask,
                             entropy=torch.rand(2, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert (logp.grad[mask == 0] == 0).all()
    assert all(math.isfinite(v) for v in m.values())


def test_clip_fractions_use_each_tokens_eps():
    # one row per sign, entropies 0..4: the 0.8 quantile is 3.2, so the last token gets the wide clip (0.4)
    entropy = torch.arange(5.0).repeat(2, 1)
    rs = torch.tensor([[1.3] * 5, [0.7] * 5])  # outside the narrow clip, inside the wide one
    old = torch.zeros(2, 5)
    A, mask = torch.tensor([1.0, -1.0]), torch.ones(2, 5)
    _, flat = na.policy_loss("grpo", rs.log(), old, A, mask, **CLIP)
    _, split = na.policy_loss("grpo-ent", rs.log(), old, A, mask, **CLIP, entropy=entropy)
    assert flat["clip_high_pos"] == 1.0 and flat["clip_low_neg"] == 1.0
    assert split["clip_high_pos"] == pytest.approx(4 / 5) and split["clip_low_neg"] == pytest.approx(4 / 5)


# --- the k3 KL (§5) ---------------------------------------------------------------------------------------
def test_kl_k3_hand_values_and_gradient():
    ref = torch.tensor([[-1.0, -1.0, -1.0, -1.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, math.log(2), -math.log(2), 30.0]], dtype=torch.float64)  # ref - logp
    logp = (ref - d).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    kl = na.kl_k3(logp, ref, mask)
    # per token: 0; 2 - ln 2 - 1; 1/2 + ln 2 - 1; d clamped to 20, e^20 - 21 clamped to 10
    terms = [0.0, 1 - math.log(2), math.log(2) - 0.5, 10.0]
    assert kl.item() == pytest.approx(sum(terms) / 4, abs=1e-12)
    kl.backward()
    # d/dlogp (e^d - d - 1) = 1 - e^d, over N = 4; the clamped token has none
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -1.0, 0.5, 0.0]], dtype=torch.float64) / 4)
    masked = na.kl_k3(ref - d, ref, torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64))
    assert masked.item() == pytest.approx((0.0 + math.log(2) - 0.5) / 2, abs=1e-12)
    assert na.kl_k3(ref, ref, torch.zeros_like(ref)).item() == 0.0


def test_kl_coef_flag():
    assert na.Config().kl_coef == 0.0
    assert na.parse_config(["--kl-coef", "0.001"]).kl_coef == 0.001
    with pytest.raises(ValueError, match="^--kl-coef must be >= 0") as e:
        na.parse_config(["--kl-coef", "-0.001"])
    assert "\n" not in str(e.value)

"""The peers of the dose ladder (peers.py, ASPO.md §13) and the split rungs: what they weight, by
autograd through nano_aspo.policy_loss; the token-wise ones also run test_losses.py's per-branch
tests. Here: m2po's batch-level mask against a plain reimplementation of AReaL's, the peers'
options, and the measured weights that training logs (stale_weights)."""
import math

import pytest
import torch

import nano_aspo as na
import peers

CLIP = dict(eps_low=0.2, eps_high=0.28, clip_c=3.0)


def areal_keep(m2: list[float], budget: float) -> list[bool]:
    """AReaL's _get_m2po_loss_mask written out as a loop: drop the largest m2 one at a time until
    the mean of the rest is below the budget; if it never is, keep only the smallest."""
    order = sorted(range(len(m2)), key=lambda i: -m2[i])
    for dropped in range(len(m2)):
        rest = [m2[i] for i in order[dropped:]]
        if sum(rest) / len(rest) < budget:
            break
    else:
        dropped = len(m2) - 1
    return [i not in order[:dropped] for i in range(len(m2))]


def test_m2po_keep_is_areals_mask_per_member():
    gen = torch.Generator().manual_seed(3)
    ratio = (torch.randn(3, 4, 6, generator=gen) * 0.3).exp()  # (S, B, T): three members
    mask = (torch.rand(3, 4, 6, generator=gen) > 0.2).float()
    keep = peers.m2po_keep(ratio, mask, 0.04)
    for s in range(3):
        valid = mask[s].flatten() > 0
        m2 = (ratio[s].flatten()[valid].log() ** 2).tolist()
        assert keep[s].flatten()[valid].tolist() == areal_keep(m2, 0.04)
        assert not keep[s].flatten()[~valid].any()  # padding is never kept
    kept = ratio.log() ** 2 * keep
    assert ((kept.sum((-2, -1)) / keep.sum((-2, -1))) < 0.04).all()  # within the budget
    assert (keep.sum((-2, -1)) < (mask > 0).sum((-2, -1))).all()  # and something went


def test_m2po_weights_on_a_hand_made_batch():
    # nine tokens at r = 1 and one stale right token at r = 0.2: its m2 = (log 0.2)^2 = 2.59 puts
    # the batch's mean at 0.26 > 0.04, so it alone is dropped; the other nine share the token mean
    # of 9 kept tokens, each weighted r x 10 / 9
    old = torch.full((2, 5), -1.0)
    ratio = torch.ones(2, 5)
    ratio[0, 2] = 0.2
    A = torch.tensor([1.5, -0.5])
    w = na.token_weights("m2po", old + ratio.log(), old, A, torch.ones(2, 5), **CLIP)
    want = torch.full((2, 5), 10 / 9)
    want[0, 2] = 0.0
    torch.testing.assert_close(w, want, atol=1e-5, rtol=1e-5)
    # the same batch within the budget (r = 0.9 there: m2 = 0.011 / 10): nothing dropped, grpo's r
    ratio[0, 2] = 0.9
    w = na.token_weights("m2po", old + ratio.log(), old, A, torch.ones(2, 5), **CLIP)
    torch.testing.assert_close(w, ratio, atol=1e-5, rtol=1e-5)


def test_m2po_keeps_one_token_where_no_share_meets_the_budget():
    old = torch.full((1, 4), -1.0)
    ratio = torch.tensor([[0.3, 0.25, 0.2, 5.0]])  # every m2 is above 0.04
    w = na.token_weights("m2po", old + ratio.log(), old, torch.tensor([1.0]), torch.ones(1, 4),
                         **CLIP)
    # AReaL keeps the smallest m2 (r = 0.3, below 1 - eps_low: grpo's weight r), alone: x 4 / 1
    torch.testing.assert_close(w, torch.tensor([[0.3 * 4, 0.0, 0.0, 0.0]]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method, option, value, r, want", [
    ("cispo", "eps_max", 2.0, 3.5, 2.0),          # the truncation is the flag's
    ("cispo", "eps_max", 5.0, 3.5, 3.5),
    ("icepop", "bounds", (0.25, 5.0), 0.3, 0.3),  # inside a wider interval: grpo's r
    ("icepop", "bounds", (0.5, 5.0), 0.3, 0.0),   # below lo: dropped
    ("m2po", "m2_budget", 10.0, 0.3, 0.3),        # a budget above every m2: none dropped
])
def test_peer_options_reach_the_loss(method, option, value, r, want):
    old = torch.full((1, 2), -1.0)
    w = na.token_weights(method, old + math.log(r), old, torch.tensor([1.0]), torch.ones(1, 2),
                         **CLIP, **{option: value})
    torch.testing.assert_close(w, torch.full((1, 2), want), atol=1e-5, rtol=1e-5)


def test_options_come_from_the_config():
    cfg = na.parse_config(["--cispo-eps-max", "3", "--icepop-bounds", "0.2,8", "--m2po-budget",
                           "0.1"])
    assert peers.options(cfg) == {"eps_max": 3.0, "bounds": (0.2, 8.0), "m2_budget": 0.1}
    default = na.parse_config([])
    assert peers.options(default) == {"eps_max": peers.CISPO_EPS_MAX,
                                      "bounds": peers.ICEPOP_BOUNDS,
                                      "m2_budget": peers.M2PO_BUDGET}


@pytest.mark.parametrize("method", na.METHODS)
def test_training_logs_the_weight_each_method_gives_stale_right_tokens(method):
    # what rl_step logs as w_own_below08_pos / w_own_below03_pos (logp requires grad there) is the
    # method's own weight, the mean of token_weights over the positive tokens with r < 0.8 / < 1/3
    gen = torch.Generator().manual_seed(5)
    old = -torch.rand(2, 4, 6, generator=gen) * 2  # two members
    ratio = (torch.randn(2, 4, 6, generator=gen) * 0.8).exp()
    ratio[:, 0, :2] = torch.tensor([0.2, 0.3])  # row 0 is positive in both members: r < 1/3 there
    A = torch.tensor([[1.0, -0.5, 0.7, 2.0], [0.3, 1.2, -1.0, 0.8]])
    mask = torch.ones(2, 4, 6)
    mask[:, 1, 4:] = 0
    logp = (old + ratio.log()).requires_grad_(True)
    _, m = na.policy_loss(method, logp, old, A, mask, **CLIP, entropy=torch.zeros_like(logp))
    for s in range(2):
        w = na.token_weights(method, logp[s].detach(), old[s], A[s], mask[s],
                             entropy=torch.zeros_like(old[s]), **CLIP)
        for key, cut in (("w_own_below08_pos", 0.8), ("w_own_below03_pos", 1 / 3)):
            low = (mask[s] > 0) & (A[s][:, None] > 0) & (ratio[s] < cut)
            assert low.any()
            assert m[key][s] == pytest.approx(w[low].mean().item(), rel=1e-4, abs=1e-5)

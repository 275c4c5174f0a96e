"""The batched path (many (method, seed) runs as one batched model, batched.py) against the reference path
(--no-batch-seeds: the same code, one member at a time): same numbers, independent members, a failing
member stops alone, a member count that does not fit is a one-line error."""
import json
import math

import pytest
import torch

import batched
import nano_aspo as na


def _rows(out):
    return {(r["method"], r["seed"], r["step"]): r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _run(tmp_path, tiny_args, name, *flags):
    out = tmp_path / name
    # a checkpoint shared by every run of a test, so that they start from the same weights
    status = na.main([*tiny_args, "--quiet", "--steps", "1", "--ckpt-dir", str(tmp_path / "ckpt"), "--out-dir", str(out),
                      *flags])
    return status, _rows(out)


def _numbers(row):
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_batched_step_one_agrees_with_one_at_a_time(tmp_path, tiny_args):
    flags = ["--seeds", "0,1", "--methods", "grpo,aspo"]
    _, batched = _run(tmp_path, tiny_args, "batched", *flags)
    _, alone = _run(tmp_path, tiny_args, "alone", *flags, "--no-batch-seeds")
    assert batched.keys() == alone.keys() and len(batched) == 8  # 2 x 2 runs, steps 0 and 1
    for key, row in alone.items():
        got = _numbers(batched[key])
        assert got.keys() == _numbers(row).keys()
        for name, want in _numbers(row).items():
            assert got[name] == pytest.approx(want, abs=1e-4), (key, name)


def test_members_are_independent(tmp_path, tiny_args):
    _, a = _run(tmp_path, tiny_args, "a", "--seeds", "0,1", "--methods", "grpo,aspo")
    _, b = _run(tmp_path, tiny_args, "b", "--seeds", "0,5", "--methods", "grpo,aspo")
    for method in ("grpo", "aspo"):  # seed 0's runs do not see that their neighbour's seed changed
        assert _numbers(a[method, 0, 1]) == pytest.approx(_numbers(b[method, 0, 1]), abs=1e-6)
    assert _numbers(a["grpo", 1, 1]) != _numbers(b["grpo", 5, 1])


def test_chunks_of_one_member_are_the_reference_path(tmp_path, tiny_args):
    _, chunked = _run(tmp_path, tiny_args, "chunked", "--seeds", "0,1", "--max-members", "1")
    _, alone = _run(tmp_path, tiny_args, "alone", "--seeds", "0,1", "--no-batch-seeds")
    assert chunked == alone


def test_a_failing_member_stops_alone(tmp_path, tiny_args, monkeypatch, capsys):
    real = na.policy_loss

    def nan_for_aspo(method, *args, **kw):
        loss, m = real(method, *args, **kw)
        return (loss * math.nan if method == "aspo" else loss), m

    monkeypatch.setattr(na, "policy_loss", nan_for_aspo)
    status = na.main([*tiny_args, "--quiet", "--steps", "2", "--seeds", "0,1", "--out-dir", str(tmp_path / "o")])
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    err = capsys.readouterr().err
    assert status == 1
    by = {(r["method"], r["seed"]): r for r in summary["runs"]}
    for seed in (0, 1):
        assert "non-finite loss" in by["aspo", seed]["error"] and by["aspo", seed]["final"] is None
        assert "error" not in by["grpo", seed] and by["grpo", seed]["final"] is not None
    assert err.count("error: aspo seed") == 2 and all(len(line) < 300 for line in err.splitlines())


def test_members_that_do_not_fit_are_a_one_line_error(tmp_path, tiny_args, monkeypatch, capsys):
    monkeypatch.setattr(batched, "free_memory", lambda device: 1000)
    status = na.main([*tiny_args, "--seeds", "0,1", "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--max-members 4" in err[0] and "GiB" in err[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_path_runs_on_cuda(tmp_path, tiny_args):
    args = [a if a != "cpu" else "cuda" for a in tiny_args]
    assert na.main([*args, "--quiet", "--steps", "1", "--seeds", "0,1", "--out-dir", str(tmp_path / "o")]) == 0

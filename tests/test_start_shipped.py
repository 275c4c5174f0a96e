"""The shipped start (assets/start.pt): current with the code, the numbers README.md prints on 1
and 2 threads, and one-line errors for a corrupt or stale file that name it and the rebuild."""
import dataclasses
import re

import pytest
import torch

import nano_aspo as na
import pretrain
from conftest import ROOT
from model import GPT

CPU = torch.device("cpu")
# the start as README.md's "What you should see" prints it (python nano_aspo.py): pass@1, pass@8,
# entropy, hard pass@8, careful share on hard problems, on the 500 held-out problems
README_START = {"pass@1": 0.536, "pass@k": 0.776, "entropy": 0.154, "hard_pass@k": 0.532,
                "careful_hard": 0.102}
TOLERANCE = 1e-3  # evaluation is seeded; another thread count may flip a rare draw


def test_the_shipped_start_is_current():
    """Fails on a change to what pretraining computes or to its defaults, not on a refactor."""
    saved = torch.load(pretrain.SHIPPED, weights_only=True)["key"]
    key = pretrain.pretrain_key(na.Config())
    assert pretrain.keys_match(saved, key), (
        f"{pretrain.SHIPPED} does not match what pretraining computes now; rebuild it with: "
        f"{pretrain.REBUILD}")


def test_the_key_sees_a_changed_setting_or_trace_and_not_rounding():
    cfg = na.Config()
    key = pretrain.pretrain_key(cfg)
    assert not pretrain.keys_match(key, pretrain.pretrain_key(dataclasses.replace(
        cfg, careful_share=0.11)))  # a changed default: the teacher's batches differ
    nudged = dict(key, loss_trace=[x + 1e-6 for x in key["loss_trace"]])
    assert pretrain.keys_match(nudged, key)  # rounding on another machine
    changed = dict(key, loss_trace=[x * 1.001 for x in key["loss_trace"]])
    assert not pretrain.keys_match(changed, key)  # what the supervised step computes changed


@pytest.mark.parametrize("threads", [1, 2])
def test_the_shipped_start_evaluates_to_the_numbers_readme_prints(threads):
    cfg = na.Config()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, path, pretrain_s = pretrain.load_start(cfg, CPU, log=lambda *a: None)
        (m,) = na.evaluate(model, na.task_problems(cfg, "test"), cfg, [1])
    finally:
        torch.set_num_threads(old)
    assert path == pretrain.SHIPPED and pretrain_s == 0.0
    start = na.summary_numbers(m, cfg.k, cfg.eval_problems)
    got = {key: round(start[key], 3) for key in README_START}
    assert all(abs(got[key] - v) <= TOLERANCE for key, v in README_START.items()), got
    readme = (ROOT / "README.md").read_text()
    line = (f"pass@1 {README_START['pass@1']:.3f}", f"pass@8 {README_START['pass@k']:.3f}",
            f"hard pass@8 {README_START['hard_pass@k']:.3f}")
    assert all(s in readme for s in line), "README.md's start numbers are not the shipped start's"


@pytest.mark.parametrize("kind", ["corrupt", "stale"])
def test_a_corrupt_or_stale_shipped_start_is_a_one_line_error_naming_the_rebuild(
        monkeypatch, tmp_path, capsys, kind):
    shipped = tmp_path / "start.pt"
    if kind == "corrupt":
        shipped.write_bytes(b"\x00 not a checkpoint")
    else:  # the right weights under the key of other settings: what an edit of the teacher leaves
        model = torch.load(pretrain.SHIPPED, weights_only=True)
        key = dict(model["key"], settings=dict(model["key"]["settings"], careful_noise=0.3))
        torch.save({"key": key, "model": model["model"]}, shipped)
    monkeypatch.setattr(pretrain, "SHIPPED", shipped)
    status = na.main(["--steps", "0", "--quiet", "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert str(shipped) in err[0] and re.search(r"rebuild it with: python pretrain\.py --rebuild",
                                                err[0])
    assert not list((tmp_path / "out").glob("pretrained-*.pt"))  # never a silent pretraining


def test_pretrain_writes_the_cache_never_the_shipped_file(monkeypatch, tmp_path):
    shipped_bytes = pretrain.SHIPPED.read_bytes()
    saved = []
    monkeypatch.setattr(pretrain, "save_checkpoint", lambda path, *a: saved.append(path))
    full = pretrain.pretrain  # the key's first steps run for real; the full stage is stubbed
    monkeypatch.setattr(pretrain, "pretrain", lambda cfg, device, log=print, **k: full(
        cfg, device, log, **k) if k else GPT(na.model_config(cfg)))
    cfg = na.parse_config(["--pretrain", "--out-dir", str(tmp_path)])
    _, path, _ = pretrain.load_start(cfg, CPU, log=lambda *a: None)
    assert saved == [path] and path.parent == tmp_path and path != pretrain.SHIPPED
    assert pretrain.SHIPPED.read_bytes() == shipped_bytes

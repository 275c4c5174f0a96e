"""experiments/runs.py: a suite end to end (resumable, one shared checkpoint, its report) and one-line errors."""
import json

from experiments import runs
from experiments.results import load_suite


def test_tradeoff_suite_end_to_end_is_resumable_and_reports(tmp_path, tiny_args, capsys):
    argv = ["tradeoff", "--seeds", "4", "--root", str(tmp_path), "--parallel", "2", "--",
            *tiny_args, "--steps", "2", "--eval-every", "1", "--lr", "1e-2"]
    assert runs.main(argv) == 0
    out = capsys.readouterr().out
    # one batched process per learning rate, each with both methods of the seed
    done = sorted(p.parent.name for p in (tmp_path / "tradeoff").glob("*/summary.json"))
    assert done == ["lr0.0025", "lr0.005", "lr0.01"]
    assert out.count("done ") == 4  # the checkpoint's start run and the three learning rates
    suite = load_suite(tmp_path / "tradeoff")
    assert len(suite) == 6 and all(len(r["path"]) == 3 for r in suite)  # step 0 and two evaluations
    # one shared checkpoint: every run starts from the same held-out numbers
    assert len({json.dumps(r["initial"], sort_keys=True) for r in suite}) == 1
    report = (tmp_path / "report.md").read_text()
    assert "aspo@0.01 - grpo@0.01, pass@1" in report and "pace-free" in report
    assert runs.main(argv) == 0  # again: everything is skipped
    assert capsys.readouterr().out.count("skip ") == 4
    # the suite's own flags win over the same flags after --: every run kept its seed, method and lr
    for r in suite:
        assert r["seed"] == 4 and r["method"].split("@")[0] in ("grpo", "aspo")
    ckpt_start = json.loads((tmp_path / "ckpt-start" / "summary.json").read_text())
    assert ckpt_start["config"]["steps"] == 0 and ckpt_start["runs"] == []  # not the --steps 2 after --
    # another setting after -- is another experiment: no run counts as finished for it (it goes
    # first in every run's flags, as the flags after -- do), so each would rerun
    folders = [tmp_path / "ckpt-start", *(tmp_path / "tradeoff").glob("lr*")]
    assert len(folders) == 4
    for folder in folders:
        flags = json.loads((folder / "argv.json").read_text())
        assert runs.finished(folder, flags)
        assert not runs.finished(folder, ["--eval-samples", "3", *flags])


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert runs.main(["tradeoff", "--seeds", "a", "--root", str(tmp_path)]) == 2
    assert runs.main(["tradeoff", "--root", str(tmp_path), "--", "--lr", "-1"]) == 2
    err = capsys.readouterr().err.strip().split("\n")
    assert len(err) == 2 and all(e.startswith("runs.py: error:") for e in err) and "--lr" in err[1]


def test_lockin_report_shares_mcnemar_and_t_intervals(tmp_path):
    # two arms on 4 paired seeds: grpo locks in on seeds 0-2, aspo-ref on seed 0 only; a control on seed 1
    def final(careful, hard, p1):
        return {"careful_hard": careful, "hard_pass@k": hard, "pass@1": p1, "pass@k": p1, "entropy": 0.1}
    def write(folder, runs):
        (tmp_path / "lockin" / folder).mkdir(parents=True)
        (tmp_path / "lockin" / folder / "summary.json").write_text(json.dumps({"runs": runs}))
    grpo = [final(0.05, 0.1, 0.5), final(0.1, 0.2, 0.5), final(0.15, 0.2, 0.6), final(0.9, 0.9, 0.9)]
    aspo = [final(0.1, 0.2, 0.5), final(0.8, 0.7, 0.8), final(0.9, 0.8, 0.8), final(0.95, 0.9, 0.9)]
    ctrl = [final(0.5, 0.5, 0.5), final(0.1, 0.2, 0.5), final(0.5, 0.4, 0.6), final(0.9, 0.9, 0.9)]
    write("grpo-aspo-ref", [{"method": m, "seed": s, "final": f} for s in range(4)
                            for m, f in (("grpo", grpo[s]), ("aspo-ref", aspo[s]))])
    write("grpo-kl005", [{"method": "grpo", "seed": s, "final": ctrl[s]} for s in range(4)])
    lines = runs.report_lockin(tmp_path)
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ") and "/" in line}
    assert "3/4 = 0.75" in rows["grpo"] and "1/4 = 0.25" in rows["aspo-ref"] and "1/4 = 0.25" in rows["grpo-kl005"]
    assert "0 / 2, p = 0.500" in rows["aspo-ref"]  # seeds 1, 2: only grpo locked in; McNemar on 2 discordant
    # hard pass@8 differences 0.1, 0.5, 0.6, 0: mean 0.3, sd 0.2944, 0.3 +- 3.182 * 0.2944 / 2 (t, 3 df)
    assert "+0.300 [-0.168, +0.768]" in rows["aspo-ref"]


def test_dose_suite_end_to_end_pairs_the_rungs_and_reports_the_named_contrasts(tmp_path, tiny_args, capsys):
    # the ladder narrowed to three rungs (--rungs, as phase 8's extension runs), two seeds in one process
    argv = ["dose", "--seeds", "4,5", "--rungs", "grpo,aspo,cispo", "--root", str(tmp_path), "--",
            *tiny_args, "--steps", "2", "--eval-every", "1", "--lr", "1e-2"]
    assert runs.main(argv) == 0
    summary = json.loads((tmp_path / "dose" / "ladder-grpo-aspo-cispo" / "s4-5" / "summary.json").read_text())
    assert sorted((r["method"], r["seed"], r["lag"]) for r in summary["runs"]) == sorted(
        (m, s, 8) for m in ("grpo", "aspo", "cispo") for s in (4, 5))
    assert summary["config"]["ratio_anchor"] == "sampler" and summary["config"]["max_members"] == 6
    assert all("w_own_below08_pos" in r["stale"] for r in summary["runs"])  # the mechanism is kept per run
    report = (tmp_path / "report.md").read_text()
    assert "### dose ladder, ladder" in report and "| cispo |" in report
    assert "- cispo - grpo: " in report and "- aspo - cispo: " in report  # phase 8b's named contrasts
    assert "- aspo - nois" not in report  # a contrast whose rung did not run is not reported
    assert runs.main(argv) == 0 and "skip " in capsys.readouterr().out


def test_an_extended_contrast_reports_its_16_seed_reading_beside_the_pooled_one(tmp_path):
    # phase 8b's two-stage rule: seeds 0-15 of every rung, seeds 16-31 of the extension's rungs only
    def summary(folder, gaps, seeds):
        runs_ = [{"method": m, "seed": s, "lag": 8, "stale": {},
                  "final": {k: 0.1 + gap(s) + 0.01 * (s % 3) for k in runs.STALE_ENDPOINTS + ("entropy",)}}
                 for m, gap in gaps.items() for s in seeds]
        (tmp_path / "dose" / folder).mkdir(parents=True)
        (tmp_path / "dose" / folder / "summary.json").write_text(json.dumps({"runs": runs_}))
    zero = lambda s: 0.0
    # posmean - grpo: +0.04 +- 0.08 on seeds 0-15 (includes 0, |mean| >= 0.03: extend), +0.10 after;
    # icepop - grpo: -0.10 on seeds 0-15 (excludes 0: stands), its rung run on 16-31 all the same
    summary("ladder/s0-15", {"grpo": zero, "aspo": zero, "nois": zero, "icepop": lambda s: -0.1,
                             "posmean": lambda s: 0.04 + (0.08 if s % 2 else -0.08)}, range(16))
    summary("ladder-grpo-aspo-posmean-icepop/s16-31", {"grpo": zero, "aspo": zero, "icepop": zero,
                                                      "posmean": lambda s: 0.16, "m2po": lambda s: 0.04 + (
                                                          0.08 if s % 2 else -0.08)}, range(16, 32))
    lines = runs.report_dose(tmp_path)
    line = {row.split(":")[0][2:]: row for row in lines if row.startswith("- ")}
    assert line["posmean - grpo"].startswith("- posmean - grpo: 16 seeds: +0.040 [")
    assert "(extend to seeds 16-31); 32 seeds: +0.100 [" in line["posmean - grpo"]
    assert line["posmean - grpo"].endswith("24/32 (distinguishable from 0)")
    assert line["icepop - grpo"].startswith("- icepop - grpo: 16 seeds: -0.100 [-0.100, -0.100] 0/16 "
                                            "(distinguishable from 0); 32 seeds: -0.050 [")
    assert line["icepop - grpo"].endswith("(not extended by the rule: read, not tested)")
    assert line["nois - grpo"] == "- nois - grpo: +0.000 [+0.000, +0.000] 0/16 (within noise)"
    # seeds 16-31 alone are no first stage: nothing to extend
    assert line["m2po - grpo"].startswith("- m2po - grpo: +0.040 [") and line["m2po - grpo"].endswith(
        " 8/16 (within noise)")


def test_the_map_report_pools_its_cells_with_phase_7s_on_policy_runs(tmp_path):
    def summary(folder, methods, lag, anchor, careful, seeds=range(3)):
        runs_ = [{"method": m, "seed": s, "lag": lag, "stale": {"drift": 0.1 * lag, "ess": 0.9},
                  "final": {"careful_hard": careful(m, s), "pass@k": 0.5 + careful(m, s)}}
                 for m in methods for s in seeds]
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "summary.json").write_text(json.dumps(
            {"config": {"ratio_anchor": anchor, "minibatches": 8, "epochs": 4}, "runs": runs_}))
    gap = {"grpo": 0.0, "aspo": 0.2, "posmean": 0.1}
    summary("map/sampler-L2-mu32/s0-2", ("grpo", "aspo", "posmean"), 2, "sampler",
            lambda m, s: 0.05 + gap[m] + 0.01 * s * (m == "aspo"))
    # lag 0: posmean from the map (9b), grpo and aspo from phase 7's on-policy process
    summary("map/sampler-L0-mu32/s0-2", ("posmean",), 0, "sampler", lambda m, s: 0.3)
    summary("stale/sampler-L0-8/s0-2", ("grpo", "aspo"), 0, "sampler", lambda m, s: 0.4)
    # phase 8's on-policy control (grpo beside the new rungs): it does not replace phase 7's grpo
    summary("dose/on-policy/s0-2", ("grpo", "icepop"), 0, "sampler", lambda m, s: 0.9)
    rows = [line for line in runs.report_map(tmp_path, "posmean") if line.startswith("| ")][1:]
    assert [row.split(" | ")[:4] for row in rows] == [["| on-policy", "0", "32", "3"], ["| sampler", "2", "32", "3"]]
    lag2 = rows[1].split(" | ")
    assert lag2[4:6] == ["0.2000", "0.900"]  # drift, ESS
    assert lag2[6] == "0.050 / 0.260 / 0.150"  # careful share of grpo / aspo / posmean
    # aspo - grpo 0.20, 0.21, 0.22: mean 0.21, sd 0.01, 0.21 +- 4.303 * 0.01 / sqrt(3) (t, 2 df)
    assert lag2[8] == "+0.210 [+0.185, +0.235] 3/3" and lag2[9].startswith("+0.100 ")
    assert lag2[10].startswith("+0.210 [") and lag2[11].startswith("+0.100 ")  # pass@8 the same
    assert lag2[12] == "0/3 / 0/3 / 0/3" and rows[0].split(" | ")[8].startswith("+0.000 ")
    assert rows[0].split(" | ")[9].startswith("-0.100 ")  # lag 0: posmean (map) - grpo (phase 7)
    # a cell where only phase 7 ran (grpo and aspo): its row, the third method's cells "-"
    summary("stale/decoupled-L8/s0-2", ("grpo", "aspo"), 8, "decoupled", lambda m, s: 0.2 + gap[m])
    row = next(line for line in runs.report_map(tmp_path, "posmean") if line.startswith("| decoupled"))
    assert row.split(" | ")[6:10] == ["0.200 / 0.400 / -", "0.700 / 0.900 / -", "+0.200 [+0.200, +0.200] 3/3", "-"]
    assert row.split(" | ")[12] == "0/3 / 0/3 / -"
    # the third method on fewer seeds than phase 7's pair (9c): each over its own, the count beside
    summary("map/decoupled-L8-mu32/s0-1", ("posmean",), 8, "decoupled", lambda m, s: 0.1, seeds=range(2))
    row = next(line for line in runs.report_map(tmp_path, "posmean") if line.startswith("| decoupled"))
    assert row.split(" | ")[3] == "3 (posmean 2)" and row.split(" | ")[6] == "0.200 / 0.400 / 0.100"
    assert row.split(" | ")[9] == "-0.100 [-0.100, -0.100] 0/2"


def test_map_runs_every_cell_on_seeds_0_7_before_the_extension(tmp_path):
    import argparse
    args = argparse.Namespace(seeds=list(range(16)), third="icepop", root=tmp_path)
    jobs = runs.map_jobs(args, [])
    names = [f"{out.parent.name}/{out.name}" for _, out, _ in jobs]
    assert names[-4:] == ["sampler-L1-mu32/s8-15", "sampler-L2-mu32/s8-15", "sampler-L0-mu32/s0-7",
                          "decoupled-L8-mu32/s0-7"]
    assert all(n.endswith("/s0-7") for n in names[:-4]) and len(names) == 11
    for argv, out, _ in jobs[-2:]:  # phases 9b, 9c: the third method alone where phase 7 ran grpo and aspo
        assert argv[argv.index("--methods") + 1] == "icepop", out
    assert [argv[argv.index("--rollout-lag") + 1] for argv, _, _ in jobs[-2:]] == ["0", "8"]
    assert "decoupled-L16-mu32/s0-7" in names and "sampler-L8-mu8/s0-7" in names
    argv, _, _ = jobs[names.index("sampler-L8-mu8/s0-7")]
    assert argv[argv.index("--methods") + 1] == "grpo,aspo,icepop" and argv[argv.index("--epochs") + 1] == "1"


def test_the_map_without_seeds_runs_every_cell_the_extension_included(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(runs, "run_all", lambda jobs, parallel: ran.extend(out for _, out, _ in jobs))
    assert runs.main(["map", "--third", "posmean", "--root", str(tmp_path)]) == 0
    assert len(ran) == len(runs.MAP_CELLS) and "s8-15" in {out.name for out in ran}
    ran.clear()
    assert runs.main(["map", "--third", "posmean", "--seeds", "0,1", "--root", str(tmp_path)]) == 0
    assert {out.name for out in ran} == {"s0-1"}


def test_bad_rungs_and_third_are_one_line_errors(capsys):
    assert runs.main(["dose", "--rungs", "grpo,ppo"]) == 2
    assert runs.main(["dose", "--rungs", "grpo,,aspo"]) == 2
    assert runs.main(["map", "--third", "aspo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--rungs ppo" in err[0] and "an empty entry" in err[1] and "--third aspo" in err[2]

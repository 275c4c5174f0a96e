"""experiments/bench.py on a tiny configuration: every phase prints its line."""
from experiments import bench


def test_bench_prints_every_phase(capsys, tiny_args):
    bench.main(tiny_args + ["--steps", "3", "--eval-every", "1"])
    out = capsys.readouterr().out
    for start in ("device cpu", "sampling (KV cache ):", "sampling (recompute):", "KV cache speed-up:",
                  "verifier: three completions",
                  "pretraining:", "one RL step (4 prompts x 4 samples, mu = 4)", "evaluation: full set (8 problems"):
        assert start in out, start

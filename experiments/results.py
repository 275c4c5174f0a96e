"""Reading what nano_aspo.py wrote: its metrics.jsonl files, and the result trees of runs.py's suites
(<suite>/lr<lr>/ for a batch of runs, <suite>/<method>@<lr>/s<seed>/ for one), for the report (runs.py)
and the figures (plot.py)."""
import json
from pathlib import Path


def read_metrics(paths: list[Path]) -> list[dict]:
    """Every row of the metrics.jsonl files, in order. ValueError if there are none."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{' '.join(map(str, paths))} holds no metrics")
    return rows


def label_order(label: str) -> tuple:
    """Sort key of a "<method>@<lr>" label: by method, then from the largest learning rate down."""
    method, lr = label.split("@")
    return method, -float(lr)


def load_suite(folder: Path) -> list[dict]:
    """Every finished run below `folder`: its summary entry, labelled "<method>@<lr>", with the held-out
    path (the evaluations' rows of its metrics.jsonl, step 0 included)."""
    runs = []
    for summary_path in sorted(Path(folder).glob("**/summary.json")):  # one run per folder, or a batch of runs
        summary = json.loads(summary_path.read_text())
        rows = read_metrics([summary_path.parent / "metrics.jsonl"])
        for run in summary["runs"]:
            if run.get("final"):
                label = f"{run['method']}@{summary['config']['lr']:g}"
                path = [r for r in rows if r["method"] == run["method"] and r["seed"] == run["seed"] and "eval_pass@1" in r]
                runs.append(dict(run, method=label, path=path, k=summary["config"]["k"]))
    return runs

"""Every `python SCRIPT.py ...` command in README.md, experiments/README.md, integrations/README.md
and the exercises' worksheet and answer key still runs as printed: the script exists and every --flag
it is given appears in that script's --help (runs.py's flags after `--` are nano_aspo.py's). Commands
are read from fenced code blocks, indented code lines and inline code (tests/test_exercises.py runs
the exercises' commands too, at tiny settings)."""
import contextlib
import functools
import importlib
import io
import re

import pytest

from conftest import ROOT

DOCS = tuple(doc for doc in ("README.md", "experiments/README.md", "integrations/README.md",
                            "exercises/README.md", "exercises/ANSWERS.md")
             if (ROOT / doc).is_file())
PASSED_ON = {"experiments/runs.py": "nano_aspo.py"}  # the flags after `--` go to this script


def code_segments(text: str) -> list[str]:
    """The code of a markdown text: each line of a fenced block, each indented line, each inline span."""
    segments, rest, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            segments.append(line)
        else:
            rest.append(line)
    segments += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", "\n".join(rest))]
    return segments


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, its arguments) of every `python SCRIPT.py ...` in the text's code; shell operators
    (&&, ;, |) end a command and # starts a comment."""
    out = []
    for segment in code_segments(text):
        for part in re.split(r"&&|;|\|", segment.split(" #")[0]):
            m = re.search(r"(?:^|\s)python3? (\S+\.py)\b(.*)", part)
            if m:
                out.append((m.group(1), m.group(2).split()))
    return out


def flags(args: list[str]) -> list[str]:
    """The --flags among args, their values and brackets stripped: "[--eps-low" -> "--eps-low"."""
    return [m.group(0) for a in args for m in [re.match(r"--[a-z][a-z0-9-]*", a.strip("[](){}*"))] if m]


@functools.cache
def help_text(script: str) -> str:
    """SCRIPT.py's --help, from its main() in this process (a process per script took seconds)."""
    module = importlib.import_module(script.removesuffix(".py").replace("/", "."))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0, f"{script} --help exited {exit_.value.code}"
    return out.getvalue()


def all_commands():
    return [(doc, script, args) for doc in DOCS for script, args in commands((ROOT / doc).read_text())]


def test_the_parser_reads_the_docs_commands():
    # the parser itself, on a made-up text: a block, an indented line, inline code over two lines, && and --
    text = ("```\n$ python a.py --x 1  # comment --not\n```\n    python b.py [--y 2]\n"
            "and `python c.py --z &&\npython d.py -- --w` here; `python -m pytest -q`\n")
    assert commands(text) == [("a.py", ["--x", "1"]), ("b.py", ["[--y", "2]"]), ("c.py", ["--z"]),
                              ("d.py", ["--", "--w"])]
    assert flags(["[--eps-low", "0.2", "--plot", "w.png]", "--seeds=0,1", "-x", "--"]) == ["--eps-low", "--plot", "--seeds"]
    found = {script for _, script, _ in all_commands()}
    assert {"nano_aspo.py", "experiments/runs.py", "experiments/plot.py", "integrations/check_loss.py"} <= found, found


@pytest.mark.parametrize("doc,script,args", all_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_command_script_and_flags_exist(doc, script, args):
    assert (ROOT / script).is_file(), f"{doc}: {script} does not exist"
    own, passed = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
    targets = [(script, own)] + ([(PASSED_ON.get(script, script), passed)] if passed else [])
    for target, target_args in targets:
        text = help_text(target)
        missing = [f for f in flags(target_args) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
        assert missing == [], f"{doc}: python {script} {' '.join(args)}: {target} --help has no {missing}"

"""`pulsewire tasks` and `--task`: the registered tasks are listed, and a task name or use the CLI cannot serve
exits 2 with what to do (no traceback)."""
import json
import subprocess
import sys

from tests.conftest import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_tasks_lists_the_registered_tasks():
    res = _run("tasks", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"beat", "tabular"} <= set(rows)
    assert rows["beat"]["selection_metric"] == "macro_f1" and rows["tabular"]["classes"] == ["malignant", "benign"]
    assert "--only" in _run("tasks", "bench", "--help").stdout


def test_unknown_tasks_and_tasks_without_an_edge_runner_exit_2():
    res = _run("simulate", "--task", "no-such-task", "--seeds", "0")
    assert res.returncode == 2 and "known tasks" in res.stderr and "Traceback" not in res.stderr
    res = _run("tasks", "bench", "--only", "no-such-task")
    assert res.returncode == 2 and "not a registered task" in res.stderr
    res = _run("edge", "run", "--task", "no-such-task", "--input", "-")
    assert res.returncode == 2 and "no edge runner" in res.stderr
    res = _run("edge", "run", "--task", "tabular", "--input", "-")
    assert res.returncode == 2 and "--model" in res.stderr

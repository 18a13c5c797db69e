"""`pulsewire report --task`: a task's CLI run writes its page, and the report command renders it (and a task
bench file) again from the JSON; a file of another task, or an unknown task, exits 2 with what to do."""
import json
import subprocess
import sys

from tests.conftest import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_task_run_writes_its_report_and_report_task_renders_it_again(tmp_path):
    res = _run("simulate", "--task", "tabular", "--rounds", "2", "--seeds", "0", "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    results_path = tmp_path / "run" / "tabular" / "simulate_tabular.json"
    results = json.loads(results_path.read_text())
    page = (tmp_path / "run" / "tabular" / "simulate_tabular.md").read_text()
    assert "# pulsewire: task tabular, simulate run" in page and "neg_log_loss" in page
    run = results["runs"][0]
    # the per-seed row shows the run's own numbers: best round and the int8 test score of the selection metric
    assert f"| 0 | {run['best_epoch']} | {run['val']['neg_log_loss']:.4f} |" in page
    assert f"{run['test']['int8']['accuracy']:.4f} ± 0.0000" in page

    res = _run("report", str(results_path), "--task", "tabular", "--out", str(tmp_path / "again"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "again" / "simulate_tabular.md").read_text() == page
    html = (tmp_path / "again" / "simulate_tabular.html").read_text()
    assert "simulate run" in html and (tmp_path / "again" / "simulate_tabular_selection.png").stat().st_size > 0

    res = _run("report", str(results_path), "--task", "har", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "holds results of task 'tabular'" in res.stderr
    res = _run("report", str(results_path), "--task", "nope")
    assert res.returncode == 2 and "known tasks" in res.stderr


def test_report_renders_one_task_of_a_merged_bench_file(tmp_path):
    bench = json.loads((ROOT / "bench" / "results" / "tasks-har.json").read_text())
    merged = tmp_path / "tasks.json"
    merged.write_text(json.dumps({"tasks": {"har": bench, "af": {"task": "af", "results": {}, "targets": []}}}))
    res = _run("report", str(merged))
    assert res.returncode == 2 and "pick one of them with --task" in res.stderr
    res = _run("report", str(merged), "--task", "har", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "tasks_har.md").read_text()
    acc = bench["results"]["cnn"]["summary"]["central_int8_accuracy"]["mean"]
    assert f"| cnn | centralized | {acc:.4f}" in page and "## Targets" in page

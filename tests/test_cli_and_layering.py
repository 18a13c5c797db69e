import subprocess
import sys

from tests.conftest import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_subcommands():
    res = _run("--help")
    assert res.returncode == 0 and all(c in res.stdout for c in ("foundation", "data", "simulate"))
    res = _run("foundation", "--help")
    assert res.returncode == 0 and "--seeds" in res.stdout


def test_missing_data_dir_exits_2_with_instructions(tmp_path):
    res = _run("data", "--data-dir", str(tmp_path / "missing"))
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "MITDB_DIR" in res.stderr


def test_edge_runtime_imports_without_tensorflow():
    code = ("import sys\n"
            "import edge_runtime.classifier, edge_runtime.beat_inputs, edge_runtime.metrics\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'edge pulled in TF'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr

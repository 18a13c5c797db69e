import subprocess
import sys

import pytest

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
    modules = [p.stem for p in (ROOT / "edge_runtime").glob("*.py") if p.stem != "__init__"]
    code = ("import sys, importlib\n"
            f"for m in {modules!r}: importlib.import_module('edge_runtime.' + m)\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'edge pulled in TF'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_the_edge_selftest_passes_where_tensorflow_cannot_be_imported(exported):
    """The Raspberry Pi install has no TensorFlow: block it and run the device's self test end to end."""
    blocked = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None  # imports now fail\n"
               "from tools.cli import main\n"
               f"sys.exit(main(['edge', 'selftest', '--model', {str(exported['int8'].tflite_path)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "selftest passed" in res.stdout, res.stdout + res.stderr

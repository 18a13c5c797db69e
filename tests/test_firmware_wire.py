"""The firmware's C wire encoder (firmware/core/pw_wire.c), built with the host gcc, against the golden bytes."""
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.golden.wire_cases import GOLDEN_DIR

pytestmark = pytest.mark.firmware


def test_c_encoder_writes_the_golden_alert_and_status_bytes(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc not found: `make test` installs it (apt-get install gcc)")
    exe = tmp_path / "test_wire"
    build = subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                            str(ROOT / "firmware/core/pw_wire.c"), str(ROOT / "firmware/tests/test_wire.c"),
                            "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), str(GOLDEN_DIR)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("ok  ") == 5

"""The PlatformIO project (firmware/platformio.ini): its environments and the core API the board code calls
are checked everywhere; the `pio run` builds run where PlatformIO can download its platforms and skip with
the reason where it cannot (these build machines: no platform downloads)."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.firmware
FIRMWARE = ROOT / "firmware"
OFFLINE_SIGNS = ("HTTPClientError", "Could not install", "Could not find", "ConnectionError", "Failed to resolve",
                 "Max retries exceeded", "PackageException", "InternetIsOffline", "Temporary failure")


def _declared_symbols() -> set[str]:
    text = "".join(p.read_text() for p in (FIRMWARE / "core").glob("*.h"))
    text += "pw_model_input pw_model_output pw_model_input_size pw_model_output_size pw_model_invoke pw_model_sha256"
    return set(re.findall(r"\b(pw_[a-z0-9_]+)\b", text))


def test_platformio_ini_declares_esp32_and_cortex_m4_environments():
    ini = configparser.ConfigParser()
    ini.read(FIRMWARE / "platformio.ini")
    assert ini["env:esp32dev"]["platform"] == "espressif32"
    assert ini["env:nucleo_l476rg"]["board"] == "nucleo_l476rg"  # STM32L476: Cortex-M4F
    assert (FIRMWARE / ini["env:esp32dev"]["board_build.partitions"]).is_file()


def test_board_code_calls_only_the_core_api():
    declared = _declared_symbols()
    for src in (FIRMWARE / "boards" / "esp32" / "src" / "main.c", FIRMWARE / "boards" / "stm32l4" / "src" / "main.c"):
        called = set(re.findall(r"\b(pw_[a-z0-9_]+)\s*\(", src.read_text()))
        local = set(re.findall(r"^static [\w\s\*]*?\b(pw_[a-z0-9_]+)\s*\(", src.read_text(), re.M))
        assert called - local <= declared, f"{src.name} calls undeclared {sorted(called - local - declared)}"


@pytest.mark.parametrize("env", ["esp32dev", "nucleo_l476rg"])
def test_pio_run_builds_the_board(env, tmp_path, request):
    pio = shutil.which("pio") or shutil.which("platformio")
    if pio is None:
        pytest.skip("PlatformIO is not installed here; on a machine with network access: `pip install platformio` "
                    f"then `pio run -d firmware -e {env}` (firmware/README.md)")
    exported = request.getfixturevalue("exported")  # trains the small model only when pio can run

    project = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, project)
    from broker.model_release import generate_keys
    from tools.hil_qemu import generate_firmware_sources
    from training.codegen.release import release_key_header

    # the model, its front-end constants and self-test beat; the ESP32 build also needs a release key
    generate_firmware_sources(exported["int8"].tflite_path, project / "lib" / "pw_model" / "src")
    _, pub = generate_keys(tmp_path / "keys")
    (project / "boards" / "esp32" / "include" / "pw_release_key.h").write_text(release_key_header(pub))
    run = subprocess.run([pio, "run", "-d", str(project), "-e", env], capture_output=True, text=True, timeout=900)
    log = run.stdout + run.stderr
    if run.returncode and any(sign in log for sign in OFFLINE_SIGNS):
        pytest.skip(f"PlatformIO cannot download the {env} platform here (offline): {log.strip().splitlines()[-1]}")
    assert run.returncode == 0, log[-3000:]

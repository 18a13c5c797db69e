"""Hardware in the loop (docs/hil.md): the protocol core (firmware/core/pw_hil.c) built for the host
(-Wall -Wextra -Werror) and driven line by line, and `pulsewire hil` against the generated firmware on a
Cortex-M4 under QEMU with its UART on a pty: every beat of a real record excerpt equals the Python
pipeline's, position and int8 logits."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import EXCERPT_DIR, ROOT
from tools.hil_link import strip_checksum, with_checksum
from training.codegen import toolchain

pytestmark = pytest.mark.firmware


@pytest.fixture(scope="module")
def host_hil(exported, tmp_path_factory):
    from tools.hil_qemu import build_hil_host

    toolchain.need("gcc")
    return build_hil_host(exported["int8"].tflite_path, tmp_path_factory.mktemp("hil_host"))


def _talk(exe, text: bytes, chunk: int = 1) -> list[str]:
    out = subprocess.run([str(exe), str(chunk)], input=text, capture_output=True, timeout=60, check=True).stdout
    lines = out.decode("ascii").splitlines()
    stripped = [strip_checksum(line) for line in lines]
    assert None not in stripped, lines  # every device line carries a valid checksum
    return stripped


def test_protocol_answers_every_line_and_counts_what_it_refuses(host_hil, exported):
    """Prepare: a session with a gap, a repeated batch, a hex batch, malformed lines (a letter, a sample
    beyond 16 bits, a NUL byte), a corrupted checksum, a line too long and an unknown command. Assert: one terminal reply per non-empty line, sample
    indices follow the host's, and every refusal is counted."""
    import hashlib

    lines = [b"R\n", b"\n", b"S 0 10 11 12\n", b"S 5 13\n", b"S 2 99\n", b"X 6 FFFF0001\n", b"S 8 1 x\n",
             b"S 8 1 2*00\n", with_checksum("S 8 7 7"), b"S " + b"1 " * 300 + b"\n", b"Z\n",
             b"S 4000000000 1\n", b"S 10 40000\n", b"S 10 1\x002\n", b"Q\n", b"T\n", b"F\n"]
    for chunk in (1, 5, 4096):  # the same answers however the bytes arrive
        replies = _talk(host_hil, b"".join(lines), chunk)
        sha = hashlib.sha256(exported["int8"].tflite_path.read_bytes()).hexdigest()
        assert replies[0] == f"I pulsewire-hil 1 fs=360 gain=200 window=100 classes=5 batch=64 echo=0 model={sha[:16]}"
        assert replies[1:13] == ["A 3", "A 6", "E dup 6", "A 8", "E bad 8", "E checksum 8", "A 10", "E long 10",
                                 "E command 10", "E bad 10", "E bad 10", "E bad 10"], replies
        counters = dict(f.split("=") for f in replies[13].split()[1:])
        assert replies[13].startswith("C ")
        assert (counters["samples"], counters["gap_samples"], counters["dup_lines"], counters["bad_lines"]) == \
               ("10", "2", "1", "7")
        assert replies[14].startswith("T ok ") and replies[15] == "D 10" and len(replies) == 16


def test_batch_lines_never_exceed_what_the_device_accepts():
    """Worst-case decimal samples (-32768) are split into shorter lines; hex lines always carry 64."""
    import numpy as np

    from tools.hil_link import LINE_MAX, batch_line

    worst = np.full(200, -32768)
    line, n = batch_line(worst, 0, 64, hex_lines=False)
    assert len(with_checksum(line)) - 1 <= LINE_MAX < len(with_checksum(line + " -32768")) - 1
    assert line.split()[2:] == ["-32768"] * n and 40 < n < 64
    line, n = batch_line(worst, 0, 64, hex_lines=True)
    assert n == 64 and line == "X 0 " + "8000" * 64
    assert batch_line(worst, 190, 64, hex_lines=False)[1] == 10  # the record's end


def test_hil_run_on_qemu_matches_the_python_pipeline_on_every_beat(exported, tmp_path):
    """`pulsewire hil --qemu` on the committed excerpt of record 208 (180 s, PVCs): the device's R peaks,
    int8 logits and classes equal the Python pipeline's (edge_runtime + TFLite-Micro) on every beat; the
    model on the device is bit-exact on its own echoed inputs; nothing is dropped; the report has EC57
    scores equal to the Python pipeline's, and latencies."""
    from tools.cli import main

    toolchain.need("arm-none-eabi-gcc")
    toolchain.need("qemu-system-arm")
    report = tmp_path / "hil.json"
    rc = main(["hil", "--qemu", "--model", str(exported["int8"].tflite_path), "--record", str(EXCERPT_DIR / "208x"),
               "--speed", "max", "--echo", "--work", str(tmp_path / "work"), "--json", str(report)])
    r = json.loads(report.read_text())
    c = r["comparison"]
    assert rc == 0, r
    assert c["device_beats"] == c["python_beats"] == c["identical_positions"] == c["identical_logits"] > 250
    assert c["identical_classes"] == c["device_beats"] and c["bit_exact_every_beat"]
    assert c["inputs"]["model_bit_exact_on_device_inputs"] == c["device_beats"]
    assert r["dropped"]["dropped_samples"] == 0 and r["dropped"]["bad_lines"] == 0 and r["device"]["selftest_ok"]
    assert r["samples"] == 180 * 360 and r["device"]["counters"]["samples"] == r["samples"]
    assert r["ec57"]["device"] == r["ec57"]["python"] and r["ec57"]["device"]["detection"]["se"] > 0.95
    assert r["latency"]["detection_delay_ms"]["n"] == c["device_beats"]
    assert (tmp_path / "hil.md").read_text().startswith("# HIL run: record 208x")


def test_hil_over_a_serial_port_paced_with_hex_lines_where_tensorflow_cannot_be_imported(exported, mitdb_dir,
                                                                                          tmp_path):
    """As on a Raspberry Pi (no TensorFlow) with a board on a port: the QEMU board is started here and
    `pulsewire hil --port PTY` runs in a process where importing TensorFlow fails, ten times real time with
    X (hex) lines on the first 30 s of record 100: the same verdict."""
    from tools.hil_qemu import QemuDevice, build_hil_elf

    toolchain.need("qemu-system-arm")
    model = exported["int8"].tflite_path
    report = tmp_path / "hil.json"
    with QemuDevice(build_hil_elf(model, tmp_path / "work")) as pty:
        args = ["hil", "--port", pty, "--model", str(model), "--record", str(mitdb_dir / "100"), "--seconds", "30",
                "--speed", "10", "--hex", "--json", str(report)]
        code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None  # imports now fail\n"
                f"from tools.cli import main\nsys.exit(main({args!r}))\n")
        res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(report.read_text())
    assert r["comparison"]["bit_exact_every_beat"] and r["comparison"]["device_beats"] >= 30
    assert r["line_format"] == "X (hex)" and r["speed"] == "10" and r["port"] == pty


def test_hil_command_errors_exit_2(tmp_path, capsys):
    from tools.cli import main

    assert main(["hil", "--record", str(EXCERPT_DIR / "208x"), "--model", "m.tflite"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["hil", "--port", str(tmp_path / "no-such-tty"), "--record", str(tmp_path / "nothing"),
                 "--model", "m.tflite"]) == 2
    assert "not found" in capsys.readouterr().err


def test_hil_says_so_when_nothing_answers_on_the_port(exported, tmp_path, capsys):
    """A pseudo-terminal with no board behind it: exit 2 after the reply timeout, naming what to check."""
    import os

    from tools.cli import main

    master, slave = os.openpty()
    try:
        rc = main(["hil", "--port", os.ttyname(slave), "--model", str(exported["int8"].tflite_path), "--record",
                   str(EXCERPT_DIR / "208x"), "--timeout", "1", "--json", str(tmp_path / "r.json")])
    finally:
        os.close(master)
        os.close(slave)
    assert rc == 2 and "did not answer" in capsys.readouterr().err and not (tmp_path / "r.json").exists()


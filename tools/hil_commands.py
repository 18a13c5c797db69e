"""`pulsewire hil`: a WFDB record paced into a device under test over a serial line (docs/hil.md), its beats
read back and compared with the Python pipeline fed the same samples; EC57 scores, latency, dropped samples.
The device is a board on a serial port (``--port /dev/ttyACM0``, or any pyserial URL such as
``socket://pi.local:7000``) or the generated firmware on a Cortex-M4 under QEMU (``--qemu``)."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("pulsewire.hil")
SPEEDS = {"1": 1.0, "10": 10.0, "max": None}


class UserError(ValueError):
    """Something the user can fix (a path, a flag, the wrong board): exit 2 with this message."""


@dataclass(frozen=True)
class RecordSamples:
    name: str
    lead: str
    fs_hz: float
    adc: np.ndarray       # integers as the record stores them
    baseline: int
    gain: float           # ADC units per mV
    annotations: tuple | None  # (samples, symbols, flutter episodes) within the excerpt, if the record has them


def load_record(path: str, lead: str, seconds: float | None) -> RecordSamples:
    import wfdb

    from edge_runtime.scoring import flutter_episodes

    if not Path(f"{path}.hea").is_file():
        raise UserError(f"{path}.hea not found: --record takes a WFDB record path without extension "
                        "(e.g. ../shared/data/mitdb/100)")
    header = wfdb.rdheader(path)
    names = list(header.sig_name)
    channel = int(lead) if lead.isdigit() else (names.index(lead) if lead in names else None)
    if channel is None or not 0 <= channel < len(names):
        raise UserError(f"{path} has no lead {lead!r}; it has {names} (or pass an index)")
    n = header.sig_len if seconds is None else min(header.sig_len, int(round(seconds * header.fs)))
    rec = wfdb.rdrecord(path, channels=[channel], physical=False, sampto=n)
    ann = None
    if Path(f"{path}.atr").is_file():
        a = wfdb.rdann(path, "atr", sampto=n)
        ann = (np.asarray(a.sample), list(a.symbol), flutter_episodes(a.sample, a.symbol, a.aux_note, n))
    return RecordSamples(Path(path).name, names[channel], float(header.fs), rec.d_signal[:, 0].astype(np.int64),
                         int(rec.baseline[0]), float(rec.adc_gain[0]), ann)


def device_samples(rec: RecordSamples, device_gain: float) -> tuple[np.ndarray, np.ndarray]:
    """(integers sent, the same in mV for the Python pipeline). A record with the device's gain is sent
    unchanged; otherwise its samples are rescaled to the device's ADC units and rounded, and the Python
    pipeline gets those rounded values: the same samples either way."""
    if rec.gain == device_gain:
        return rec.adc, (rec.adc - rec.baseline) / rec.gain
    sent = np.round((rec.adc - rec.baseline) * device_gain / rec.gain).astype(np.int64)
    log.info("record gain %g, device gain %g ADC units per mV: samples rescaled", rec.gain, device_gain)
    return sent, sent / device_gain


@contextlib.contextmanager
def _device(args: argparse.Namespace, work: Path):
    """The serial port of the device under test, opened."""
    try:
        import serial
    except ImportError as exc:
        raise UserError("pyserial is missing: `pip install pyserial==3.5` (part of the edge extra)") from exc
    if args.qemu:
        from tools.hil_qemu import QemuDevice, build_hil_elf

        elf = build_hil_elf(Path(args.model), work, args.adc_gain)
        with QemuDevice(elf) as pty, serial.Serial(pty, args.baud, timeout=0.05) as port:
            yield port, f"QEMU mps2-an386 ({pty})"
        return
    try:
        port = serial.serial_for_url(args.port, baudrate=args.baud, timeout=0.05)
    except (serial.SerialException, ValueError) as exc:
        raise UserError(f"cannot open {args.port}: {exc} (is the board plugged in, is the user in the dialout "
                        "group, is another program using the port?)") from exc
    with port:
        yield port, args.port


def _check_reference(backend: str) -> None:
    """Fail before the run, not after it, when the reference interpreter is not installed (a Raspberry Pi's
    light install has LiteRT but not TFLite-Micro)."""
    try:
        if backend == "tflm":
            from tflite_micro import runtime  # noqa: F401
        else:
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the reference interpreter {backend!r} is not installed ({exc}): `pip install "
                        "tflite-micro==0.dev20261023182759` for tflm, or generate the firmware with `--fc-rounding "
                        "litert_ref` and compare with `--reference litert_ref` (LiteRT)") from exc


def run_hil(args: argparse.Namespace, work: Path) -> dict:
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from tools.hil_link import HilLink
    from tools.hil_report import compare, dropped, ec57, latency, markdown, python_pipeline

    model_path = Path(args.model)
    if not model_path.is_file() or not metadata_path_for(model_path).is_file():
        raise UserError(f"{model_path} (and its .json metadata beside it) not found: --model takes the int8 "
                        ".tflite the device's firmware was generated from")
    if (args.batch is not None and args.batch < 1) or args.window < 1 or (args.seconds is not None and args.seconds <= 0):
        raise UserError("--batch, --window and --seconds must be positive")
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    _check_reference(args.reference)
    rec = load_record(args.record, args.lead, args.seconds)
    speed = SPEEDS[args.speed]
    with _device(args, work) as (port, where):
        link = HilLink(port, reply_timeout_s=args.timeout)
        info = link.hello(echo=args.echo)
        if not sha.startswith(info.get("model", "?")):
            raise UserError(f"the device runs model {info.get('model')}, --model is {sha[:16]}: flash the firmware "
                            "generated from this model, or pass the model it was generated from")
        if float(info["fs"]) != rec.fs_hz:
            raise UserError(f"the device samples at {info['fs']} Hz, record {rec.name} at {rec.fs_hz:g} Hz")
        ok, selftest = link.selftest()
        sent, mv = device_samples(rec, float(info["gain"]))
        if sent.size and (sent.min() < -32768 or sent.max() > 32767):
            raise UserError("the samples do not fit the protocol's 16 bits at the device's gain: regenerate the "
                            "firmware with a smaller --adc-gain")
        batch = min(args.batch or (8 if speed == 1.0 else 64), int(info.get("batch", 64)))
        session = link.stream(sent, rec.fs_hz, speed, batch, args.window, info, hex_lines=args.hex)
    ref = python_pipeline(mv, model_path, args.reference)
    window = ModelMetadata.load(metadata_path_for(model_path)).signal.window_length
    cmp = compare(session, ref, model_path.read_bytes(), window)
    dev_s = np.array([b.sample for b in session.beats], np.int64)
    dev_c = np.array([b.cls for b in session.beats], np.int64)
    scores = None
    if rec.annotations is not None:
        scores = {"device": ec57(dev_s, dev_c, rec.annotations, rec.fs_hz),
                  "python": ec57(ref.samples, np.argmax(ref.logits, axis=1), rec.annotations, rec.fs_hz)}
    drop = dropped(session, int(sent.size))
    result = {
        "command": "pulsewire " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["hil"] else "pulsewire hil",
        "record": rec.name, "lead": rec.lead, "seconds": round(sent.size / rec.fs_hz, 3), "samples": int(sent.size),
        "speed": args.speed, "batch": batch, "window": args.window, "line_format": "X (hex)" if args.hex else "S",
        "port": where, "model": str(model_path), "model_sha256": sha,
        "device": {"info": " ".join(f"{k}={v}" for k, v in info.items()), "selftest": selftest, "selftest_ok": ok,
                   "counters": session.counters},
        "comparison": cmp, "ec57": scores, "latency": latency(session, rec.fs_hz), "dropped": drop,
        "wall_seconds": round(session.seconds, 2),
    }
    result["targets"] = {"bit_exact_every_beat": cmp["bit_exact_every_beat"], "no_dropped_samples":
                         drop["dropped_samples"] == 0 and drop["bad_lines"] == 0 and cmp["beat_lines_lost"] == 0
                         and drop["device_lines_bad_checksum"] == 0 and drop["device_lines_malformed"] == 0,
                         "selftest_ok": ok}
    result["markdown"] = markdown(result)
    return result


def cmd_hil(args: argparse.Namespace) -> int:
    from tools.hil_link import HilError
    from training.codegen.toolchain import BuildError, ToolchainMissing

    if not args.qemu and not args.port:
        print("pulsewire: error: give the device's serial port (--port /dev/ttyACM0) or --qemu", file=sys.stderr)
        return 2
    started = time.time()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pw-hil-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_hil(args, work)
    except (UserError, HilError, ToolchainMissing, BuildError) as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # pyserial's SerialException too: the board was unplugged or reset mid-run
        print(f"pulsewire: error: the serial line failed during the run ({exc}): check the cable and the board, "
              "then run again", file=sys.stderr)
        return 2
    out = Path(args.json) if args.json else Path("out") / "hil" / f"hil_{result['record']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = result.pop("markdown")
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"report: {out} and {out.with_suffix('.md')} ({time.time() - started:.1f} s)")
    return 0 if all(result["targets"].values()) else 1


def add_hil_parser(sub) -> None:
    from tools.hil_report import REFERENCES

    p = sub.add_parser("hil", help="hardware in the loop: pace a WFDB record into a board over serial, check "
                                   "its beats against the Python pipeline",
                       description="Sends a record's raw samples to a device running the pulsewire HIL firmware "
                                   "(docs/hil.md) at real time or faster, reads back its beats and classes, and "
                                   "reports bit-exactness against the Python pipeline, EC57 scores, latency and "
                                   "dropped samples.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port of the board (/dev/ttyACM0, /dev/ttyUSB0, or a pyserial URL "
                                      "such as socket://HOST:PORT)")
    where.add_argument("--qemu", action="store_true", help="no board: build the firmware for --model and run it "
                                                           "on a Cortex-M4 under QEMU (mps2-an386, UART on a pty)")
    p.add_argument("--record", required=True, help="WFDB record path without extension, e.g. ../shared/data/mitdb/100")
    p.add_argument("--model", required=True, help="the int8 .tflite (with .json metadata) the firmware was generated from")
    p.add_argument("--lead", default="MLII", help="signal name or index (default MLII)")
    p.add_argument("--seconds", type=float, help="only the first N seconds of the record")
    p.add_argument("--speed", choices=sorted(SPEEDS), default="1", help="1 = real time, 10 = ten times, max = as "
                                                                        "fast as the device acknowledges")
    p.add_argument("--batch", type=int, help="samples per line (default 8 at real time, else 64)")
    p.add_argument("--window", type=int, default=4, help="unacknowledged lines in flight (the device buffers them)")
    p.add_argument("--echo", action="store_true", help="the device also sends each beat's int8 inputs: tells "
                   "front-end differences from model differences")
    p.add_argument("--hex", action="store_true", help="send X lines (4 hex digits per 16-bit sample) instead of decimal")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a device reply")
    p.add_argument("--reference", choices=REFERENCES, default="tflm", help="interpreter for the Python side's int8 "
                   "model (tflm: TFLite-Micro, which the generated C matches bit for bit)")
    p.add_argument("--adc-gain", type=float, default=200.0, help="with --qemu: the firmware's ADC units per mV")
    p.add_argument("--work", help="build folder for --qemu (default: a temporary one)")
    p.add_argument("--json", help="report path (default out/hil/hil_RECORD.json, and .md beside it)")
    p.set_defaults(func=cmd_hil)

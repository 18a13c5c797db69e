"""The firmware bench's front-end section: the C streaming front-end (firmware/core/pw_frontend.c) and the C
R-peak detector (firmware/core/pw_rpeak.c) on real MIT-BIH records, on the host (gcc) and on a Cortex-M4
under QEMU (-Os): agreement with the Python pipeline, instructions per sample, state and flash bytes.

The build-and-run helpers are shared with tests/test_firmware_rpeak.py."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.data_args import cache_root
from training.codegen import toolchain

BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
RPEAK_RUNNER = toolchain.ROOT / "firmware" / "tests" / "run_rpeak.c"
FRONTEND_RUNNER = toolchain.ROOT / "firmware" / "tests" / "run_frontend.c"
#: the C sources of the streaming front-end with its detector and template features (pw_frontend.c calls both)
FRONTEND_SOURCES = ("pw_frontend.c", "pw_rpeak.c", "pw_template.c")
#: run_rpeak.c modes: peaks sample by sample, the board's ADC-to-int8 path (> 0: random chunks, seed)
PEAKS, BOARD = 0, -1


@dataclass(frozen=True)
class RecordAdc:
    """One lead (MLII) of a record as the device sees it: raw ADC integers, and what scoring needs."""

    name: str
    adc: np.ndarray        # int32 ADC units
    mv: np.ndarray         # (adc - baseline) / gain, what the Python pipeline is fed
    reference: np.ndarray  # annotated beats (AAMI beat symbols)
    excluded: list[tuple[int, int]]


def load_adc(mitdb: Path, name: str, seconds: float | None = None) -> RecordAdc:
    import wfdb

    from edge_runtime.aami import aami_labels
    from training.data.mitdb import load_record

    rec = load_record(mitdb, name)
    raw = wfdb.rdrecord(str(mitdb / name), physical=False)
    adc = raw.d_signal[:, raw.sig_name.index("MLII")].astype(np.int32)
    _, positions = aami_labels(rec.ann_symbol)
    n = adc.size if seconds is None else int(seconds * rec.fs_hz)
    ref = rec.ann_sample[positions]
    return RecordAdc(name, adc[:n], rec.signal_mv[:n], ref[ref < n], rec.flutter_episodes())


def python_peaks(mv: np.ndarray) -> np.ndarray:
    """edge_runtime's detector on the band-passed record (edge_runtime.beat_stream.offline_beats)."""
    from edge_runtime.filtering import bandpass
    from edge_runtime.rpeak import detect_rpeaks
    from edge_runtime.signal_config import SignalConfig

    return detect_rpeaks(bandpass(mv, SignalConfig()))


def build_rpeak(config_dir: Path, out: Path, m4: bool = False, mode: int = PEAKS) -> Path:
    """run_rpeak.c with the front-end and the detector: host gcc -O2, or Cortex-M4 -Os for QEMU (its command
    line compiled in: inputs.bin outputs.bin MODE)."""
    srcs = [str(toolchain.CORE / s) for s in FRONTEND_SOURCES] + [str(RPEAK_RUNNER)]
    return toolchain.build_runner(srcs, config_dir, out, ["run_rpeak", "inputs.bin", "outputs.bin", str(mode)], m4)


def write_adc(path: Path, adc: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.array([adc.size], np.uint32).tofile(f)
        np.asarray(adc, np.int32).tofile(f)


def _vals(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+) (-?\d+)", stdout)}


def run_host(exe: Path, adc: np.ndarray, mode: int, work: Path) -> tuple[bytes, dict[str, int]]:
    """Output bytes (peaks as u32, or beats) and the runner's printed counters."""
    tag = f"{exe.name}_{mode}"
    write_adc(work / f"{tag}.in", adc)
    r = subprocess.run([str(exe), str(work / f"{tag}.in"), str(work / f"{tag}.out"), str(mode)],
                       check=False, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise toolchain.BuildError(f"{exe.name} failed: {r.stdout}{r.stderr}")
    return (work / f"{tag}.out").read_bytes(), _vals(r.stdout)


def run_qemu(elf: Path, adc: np.ndarray, work: Path) -> tuple[bytes, dict[str, int]]:
    """The M4 build under mps2-an386 with -icount shift=0; adds instructions_total from calibrated ticks."""
    write_adc(work / "inputs.bin", adc)
    r = subprocess.run([toolchain.need("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-semihosting",
                        "-icount", "shift=0", "-kernel", str(elf)], cwd=work, check=False, capture_output=True, text=True,
                       timeout=600)
    vals = _vals(r.stdout)
    if r.returncode or "ticks_total" not in vals:
        raise toolchain.BuildError(f"QEMU run of {elf.name} failed (exit {r.returncode}): {r.stdout}{r.stderr}")
    vals["instructions_total"] = round(vals["ticks_total"] * vals["calibration_instructions"] / vals["calibration_ticks"])
    return (work / "outputs.bin").read_bytes(), vals


def peaks_of(out: bytes) -> np.ndarray:
    return np.frombuffer(out, np.uint32).astype(np.int64)


def agreement(py: np.ndarray, c: np.ndarray, rec: RecordAdc, fs_hz: float = 360.0) -> dict:
    """C peaks against Python peaks (matched within 2 samples, identical), and both against the annotations
    (edge_runtime.scoring: Se / +P at 150 ms, flutter excluded)."""
    from edge_runtime.scoring import match_beats, score_detection

    mp, mc = match_beats(py, c, 2)
    sp = score_detection(rec.reference, py, fs_hz, rec.excluded)
    sc = score_detection(rec.reference, c, fs_hz, rec.excluded)
    return {"record": rec.name, "python_peaks": int(py.size), "c_peaks": int(c.size), "matched_2_samples": int(mp.size),
            "identical": int(np.sum(py[mp] == c[mc])), "python": sp.to_dict(), "c": sc.to_dict()}


def _object_flash(src: Path, config_dir: Path, work: Path) -> int:
    """text + data of one object, Cortex-M4 -Os (Berkeley format: text includes .rodata)."""
    obj = work / (src.stem + ".o")
    r = subprocess.run([toolchain.need("arm-none-eabi-gcc"), *toolchain.WARNINGS, *toolchain.M4_FLAGS,
                        f"-I{toolchain.CORE}", f"-I{config_dir}", "-c", str(src), "-o", str(obj)],
                       check=False, capture_output=True, text=True)
    if r.returncode:
        raise toolchain.BuildError(r.stderr)
    line = subprocess.run([toolchain.need("arm-none-eabi-size"), str(obj)], check=False, capture_output=True,
                          text=True).stdout.splitlines()[1].split()
    return int(line[0]) + int(line[1])


def _write_config(model_path: Path, work: Path):
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from training.codegen.frontend import frontend_config

    meta = ModelMetadata.load(metadata_path_for(model_path))
    (work / "pw_frontend_config.h").write_text(frontend_config(meta))
    return meta


def bench_frontend(model_path: Path, record: str, seconds: int, mitdb: Path, work: Path) -> dict:
    """The C front-end on the first ``seconds`` of a record with its annotated R-peaks: host and Cortex-M4
    (QEMU) outputs, instructions per sample on the M4, RAM of its state, flash of its code."""
    import wfdb

    meta = _write_config(model_path, work)
    rec = wfdb.rdrecord(str(mitdb / record), physical=False, sampto=int(seconds * meta.signal.fs_hz))
    ann = wfdb.rdann(str(mitdb / record), "atr", sampto=int(seconds * meta.signal.fs_hz))
    adc = rec.d_signal[:, rec.sig_name.index("MLII")].astype(np.int32)
    peaks = np.array([s for s, c in zip(ann.sample, ann.symbol) if c in BEAT_SYMBOLS], np.uint32)
    with open(work / "inputs.bin", "wb") as f:
        np.array([len(adc), len(peaks)], np.uint32).tofile(f)
        adc.tofile(f)
        peaks.tofile(f)
    core, m4 = toolchain.CORE, toolchain.M4_BOARD
    srcs = [str(core / s) for s in FRONTEND_SOURCES] + [str(FRONTEND_RUNNER)]
    host = subprocess.run([toolchain.need("gcc"), *toolchain.WARNINGS, "-O2", f"-I{core}", f"-I{work}", *srcs, "-o",
                           str(work / "fe_host")], check=False, capture_output=True, text=True)
    elf = subprocess.run([toolchain.need("arm-none-eabi-gcc"), *toolchain.WARNINGS, *toolchain.M4_FLAGS, "-DPW_MEASURE",
                          f"-I{core}", f"-I{m4}", f"-I{work}", *srcs, str(m4 / "startup.c"), *toolchain.M4_LINK,
                          "-o", str(work / "fe.elf")], check=False, capture_output=True, text=True)
    if host.returncode or elf.returncode:
        raise toolchain.BuildError(host.stderr + elf.stderr)
    subprocess.run([str(work / "fe_host"), str(work / "inputs.bin"), str(work / "host.bin")], check=True,
                   capture_output=True)
    q = subprocess.run([toolchain.need("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-semihosting",
                        "-icount", "shift=0", "-kernel", str(work / "fe.elf")], cwd=work, check=False, capture_output=True,
                       text=True, timeout=600)
    vals = _vals(q.stdout)
    per_tick = vals["calibration_instructions"] / vals["calibration_ticks"]
    return {"record": record, "seconds": seconds, "samples": vals["samples"], "beats": vals["beats"],
            "cortex_m4_output_identical_to_host": (work / "outputs.bin").read_bytes() == (work / "host.bin").read_bytes(),
            "instructions_per_sample_cortex_m4": round(vals["ticks_total"] * per_tick / vals["samples"], 1),
            "state_bytes": vals["frontend_bytes"],
            "flash_bytes_code_and_constants": _object_flash(core / "pw_frontend.c", work, work),
            "agreement_with_python": "tests/test_firmware_frontend.py: within 1 LSB, >= 99.9 % identical"}


def bench_rpeak(model_path: Path, records: list[str], excerpt: tuple[str, int], mitdb: Path, work: Path) -> dict:
    """The C detector: peaks against the Python detector's on whole ``records`` (host), and on the first
    ``excerpt`` seconds of a record on the Cortex-M4 (QEMU): peaks and the board path's int8 beats identical
    to the host build, instructions per sample of the detector alone and of the whole ADC-to-int8 path."""
    _write_config(model_path, work)
    host = build_rpeak(work, work / "rpeak_host")
    whole = []
    for name in records:
        rec = load_adc(mitdb, name)
        out, vals = run_host(host, rec.adc, PEAKS, work)
        whole.append({**agreement(python_peaks(rec.mv), peaks_of(out), rec), "dropped": vals["dropped"]})
    name, seconds = excerpt
    rec = load_adc(mitdb, name, seconds)
    m4: dict = {"excerpt": {"record": name, "seconds": seconds, "samples": int(rec.adc.size)}}
    for mode, label in ((PEAKS, "detector"), (BOARD, "adc_to_int8")):
        elf = build_rpeak(work, work / f"rpeak_m4_{label}.elf", m4=True, mode=mode)
        q_out, q = run_qemu(elf, rec.adc, work)
        h_out, h = run_host(host, rec.adc, mode, work)
        m4[label] = {"identical_to_host": q_out == h_out and q["peaks"] == h["peaks"], "peaks": q["peaks"],
                     "beats": q["beats"], "late_peaks": q["late_peaks"],
                     "instructions_per_sample": round(q["instructions_total"] / q["samples"], 1)}
        if mode == PEAKS:
            m4["excerpt"]["agreement"] = agreement(python_peaks(rec.mv), peaks_of(h_out), rec)
    m4["state_bytes"] = {"pw_rpeak_t": q["rpeak_bytes"], "pw_frontend_t": q["frontend_bytes"]}
    m4["flash_bytes"] = {"pw_rpeak.o": _object_flash(toolchain.CORE / "pw_rpeak.c", work, work)}
    return {"whole_records": whole, "cortex_m4": m4}


def default_mitdb(data_dir: str | None) -> Path:
    from training.data.mitdb import locate_mitdb

    return locate_mitdb(data_dir or os.environ.get("MITDB_DIR"), cache_root())

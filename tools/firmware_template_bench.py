"""The firmware bench's template section: the C template features (firmware/core/pw_template.c) against the
Python edge runtime's (edge_runtime/template_features.py, integers) on real beats, on the host (gcc -O2)
and on a Cortex-M4 under QEMU (-Os): identical Q16 features, identical int8 model inputs, instructions per
beat, state bytes. Shared with tests/test_firmware_template.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from edge_runtime.model_metadata import ModelMetadata
from edge_runtime.template_features import FIXED_FEATURE_NAMES, TemplateTracker
from edge_runtime.template_fixed import quant_constants, quantize_q16, wave_fixed
from training.codegen import toolchain

TEMPLATE_RUNNER = toolchain.ROOT / "firmware" / "tests" / "run_template.c"
N_FIXED = len(FIXED_FEATURE_NAMES)


def write_windows(path: Path, waves: np.ndarray, starts: np.ndarray) -> None:
    """run_template.c's input: u32 n, then per beat an int16 new-sequence flag and the window (1/64 R)."""
    rows = np.concatenate([starts.astype(np.int16)[:, None], wave_fixed(waves).astype(np.int16)], axis=1)
    with open(path, "wb") as f:
        np.array([len(waves)], np.uint32).tofile(f)
        rows.astype("<i2").tofile(f)


def read_features(out: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q16 int32 (n, 6), int8 (n, 6)) from run_template.c's output."""
    raw = np.frombuffer(out, np.uint8).reshape(n, 4 * N_FIXED + N_FIXED)
    return raw[:, :4 * N_FIXED].copy().view("<i4"), raw[:, 4 * N_FIXED:].copy().view(np.int8)


def python_features(waves: np.ndarray, starts: np.ndarray, meta: ModelMetadata) -> tuple[np.ndarray, np.ndarray]:
    """The Python edge runtime's Q16 features and int8 inputs of the same beats (a fresh tracker at each start)."""
    q16 = np.zeros((len(waves), N_FIXED), np.int64)
    tracker = TemplateTracker(meta.signal)
    for i, wave in enumerate(waves):
        if starts[i]:
            tracker = TemplateTracker(meta.signal)
        q16[i] = tracker.fixed_features(wave_fixed(wave))
    first = meta.rr_feature_names.index(FIXED_FEATURE_NAMES[0])
    port = next(p for p in meta.inputs if len(p.shape) == 2)
    q8 = np.stack([quantize_q16(q16[:, f], quant_constants(meta.rr_mean[first + f], meta.rr_std[first + f],
                                                           port.scale), port.zero_point)
                   for f in range(N_FIXED)], axis=1)
    return q16, q8


def build(config_dir: Path, out: Path, m4: bool = False) -> Path:
    """run_template.c with pw_template.c: host gcc -O2, or Cortex-M4 -Os for QEMU (-DPW_MEASURE)."""
    srcs = [str(toolchain.CORE / "pw_template.c"), str(TEMPLATE_RUNNER)]
    return toolchain.build_runner(srcs, config_dir, out, ["run_template", "inputs.bin", "outputs.bin"], m4)


def run_host(exe: Path, waves: np.ndarray, starts: np.ndarray, work: Path) -> tuple[np.ndarray, np.ndarray]:
    write_windows(work / "template_in.bin", waves, starts)
    r = subprocess.run([str(exe), str(work / "template_in.bin"), str(work / "template_out.bin")],
                       check=False, capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise toolchain.BuildError(f"{exe.name} failed: {r.stdout}{r.stderr}")
    return read_features((work / "template_out.bin").read_bytes(), len(waves))


def run_qemu(elf: Path, waves: np.ndarray, starts: np.ndarray, work: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from tools.firmware_frontend_bench import _vals

    write_windows(work / "inputs.bin", waves, starts)
    r = subprocess.run([toolchain.need("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-semihosting",
                        "-icount", "shift=0", "-kernel", str(elf)], check=False, cwd=work, capture_output=True,
                       text=True, timeout=600)
    vals = _vals(r.stdout)
    if r.returncode or "ticks_total" not in vals:
        raise toolchain.BuildError(f"QEMU run of {elf.name} failed (exit {r.returncode}): {r.stdout}{r.stderr}")
    q16, q8 = read_features((work / "outputs.bin").read_bytes(), len(waves))
    return q16, q8, vals


def bench_template(meta: ModelMetadata, waves: np.ndarray, starts: np.ndarray, edge_inputs: np.ndarray,
                   qemu_beats: int, work: Path) -> dict:
    """C against Python on ``waves`` (beat windows in R amplitudes, sequences starting where ``starts``);
    ``edge_inputs``: the int8 model inputs the Python edge classifier computed for the same beats (the
    columns of the template features are compared)."""
    from training.codegen.frontend import frontend_config

    (work / "pw_frontend_config.h").write_text(frontend_config(meta))
    py16, py8 = python_features(waves, starts, meta)
    c16, c8 = run_host(build(work, work / "template_host"), waves, starts, work)
    first = meta.rr_feature_names.index(FIXED_FEATURE_NAMES[0])
    edge = edge_inputs[:, first:first + N_FIXED]
    n, m = len(waves), min(qemu_beats, len(waves))
    q16, q8, vals = run_qemu(build(work, work / "template.elf", m4=True), waves[:m], starts[:m], work)
    per_tick = vals["calibration_instructions"] / vals["calibration_ticks"]
    return {"beats": n, "features": list(FIXED_FEATURE_NAMES),
            "host_identical_q16_beats": int(np.all(c16 == py16, axis=1).sum()),
            "host_identical_int8_beats": int(np.all(c8 == py8, axis=1).sum()),
            "host_identical_to_edge_classifier_inputs_beats": int(np.all(c8 == edge, axis=1).sum()),
            "cortex_m4": {"beats": m, "identical_to_host_beats": int(np.all((q16 == c16[:m]), axis=1).sum()),
                          "identical_int8_to_host_beats": int(np.all(q8 == c8[:m], axis=1).sum()),
                          "instructions_per_beat": round(vals["ticks_total"] * per_tick / m),
                          "state_bytes": vals["template_bytes"]}}

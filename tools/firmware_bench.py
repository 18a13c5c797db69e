"""`pulsewire firmware bench`: bit-exactness of the generated C on the host and on a Cortex-M4 under QEMU,
flash/RAM and instructions per inference, the C front-end and R-peak detector, the C template features of
a model trained with --features rr+template, and model variants."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tools.data_args import cache_root
from tools.firmware_report import firmware_markdown

#: published TFLite-Micro interpreter footprint on Cortex-M (before the model), quoted for comparison
TFLM_INTERPRETER_FLASH = "~16-22 KB (TFLite-Micro's published interpreter footprint, before the model)"
TEST_RECORDS = ["200", "213", "232"]  # DS2 (inter-patient test) records
RPEAK_RECORDS = ["100", "108", "112", "203", "208", "232"]  # C vs Python detector on whole records


def _test_data(model_path: Path, records: list[str], data_dir: str | None):
    """The test records' beats with the model's input features (its feature set, template features too)."""
    from edge_runtime.classifier import BeatClassifier
    from edge_runtime.template_features import feature_set_of
    from tools.firmware_frontend_bench import default_mitdb
    from training.data.feature_sets import load_feature_beats

    clf = BeatClassifier.from_file(model_path)
    return clf, load_feature_beats(default_mitdb(data_dir), records, cache_root(),
                                   feature_set_of(clf.metadata.rr_feature_names))


def _test_inputs(model_path: Path, records: list[str], n: int, data_dir: str | None):
    from training.codegen.references import model_io

    clf, data = _test_data(model_path, records, data_dir)
    n = min(n, len(data))
    qw, qr = clf.quantize_inputs(data.waves[:n], data.rr[:n])
    ins, _ = model_io(model_path.read_bytes())
    return [(qw if len(shape) == 3 else qr).reshape((n,) + tuple(shape[1:])) for _, shape in ins], n


def _template_section(model_path: Path, records: list[str], qemu_beats: int, data_dir: str | None,
                      work: Path) -> dict | None:
    """For a model with template features: the C template features against the Python edge's on every beat
    of the test records (tools/firmware_template_bench.py); None for an RR-only model."""
    from edge_runtime.signal_config import RR_FEATURE_NAMES
    from tools.firmware_template_bench import bench_template
    from training.data.feature_sets import lead_sequences

    clf, data = _test_data(model_path, records, data_dir)
    if tuple(clf.metadata.rr_feature_names) == RR_FEATURE_NAMES:
        return None
    sequences = lead_sequences(data)
    order = np.concatenate(sequences)
    starts = np.zeros(len(order), bool)
    starts[np.cumsum([0] + [len(s) for s in sequences])[:-1]] = True
    _, qr = clf.quantize_inputs(data.waves[order], data.rr[order])
    work.mkdir(exist_ok=True)
    return bench_template(clf.metadata, data.waves[order], starts, qr, qemu_beats, work)


def _sizes(gen_dir: Path, kernels: tuple[str, ...], work: Path) -> dict:
    from training.codegen import toolchain

    main = toolchain.M4_BOARD / "size_main.c"
    full = toolchain.build_cortex_m4(gen_dir, kernels, work / "size.elf", measure=False, main=main)
    base = toolchain.build_cortex_m4(gen_dir, kernels, work / "size_base.elf", measure=False, main=main,
                                     extra=["-DPW_SIZE_BASELINE"])
    a, b = toolchain.section_sizes(full), toolchain.section_sizes(base)
    delta = {k: a.get(k, 0) - b.get(k, 0) for k in (".text", ".rodata", ".data", ".bss")}
    return {"elf_sections": {k: a.get(k, 0) for k in (".text", ".rodata", ".data", ".bss")},
            "startup_semihosting_sections": {k: b.get(k, 0) for k in (".text", ".rodata", ".data", ".bss")},
            "inference_path": {**delta, "flash": delta[".text"] + delta[".rodata"] + delta[".data"],
                               "static_ram": delta[".data"] + delta[".bss"]},
            "objects": toolchain.object_sizes(gen_dir, kernels, work)}


def run_bench(model_path: Path, beats: int, qemu_beats: int, records: list[str], data_dir: str | None,
              work: Path) -> dict:
    from training.codegen import toolchain
    from training.codegen.emit import generate_c
    from training.codegen.references import BACKENDS, model_io
    from training.codegen.verify import (
        agreement,
        reference_outputs,
        run_generated_host,
        split_outputs,
    )
    from training.tflm_check import arena_bytes

    t0 = time.time()
    model = model_path.read_bytes()
    inputs, n = _test_inputs(model_path, records, beats, data_dir)
    refs = reference_outputs(model, inputs, BACKENDS)
    host: dict[str, dict] = {}
    gen = exe = None
    for mode in ("tflm", "litert", "litert_ref"):
        g, outs, e = run_generated_host(model, inputs, work, mode)
        host[mode] = agreement(outs, refs).to_dict()
        if mode == "tflm":
            gen, exe = g, e
    assert gen is not None and exe is not None
    gen_dir = work / "gen_tflm"
    q_inputs = [x[:qemu_beats] for x in inputs]
    _, outs_io = model_io(model)
    q_refs = {k: [o[:qemu_beats] for o in v] for k, v in refs.items()}
    qemu_runs = {}
    for mode in ("tflm", "litert_ref"):  # the default build, and the one held to LiteRT's reference kernels
        qdir = work / f"qemu_{mode}"
        qdir.mkdir(exist_ok=True)
        toolchain.write_inputs(qdir / "inputs.bin", q_inputs)
        elf = toolchain.build_cortex_m4(work / f"gen_{mode}", generate_c(model, fc_rounding=mode).kernels,
                                        qdir / "run_model.elf")
        qemu_runs[mode] = toolchain.run_qemu(elf, qdir)
        q_outs = split_outputs(qdir / "outputs.bin", qemu_runs[mode].beats, outs_io)
        host_outs = split_outputs(work / f"outputs_{mode}.bin", n, outs_io)
        qemu_runs[mode] = (qemu_runs[mode], {**agreement(q_outs, q_refs).to_dict(), "identical_to_host_build": int(
            np.all([np.array_equal(a, b[:len(a)]) for a, b in zip(q_outs, host_outs)]))})
    q, qemu = qemu_runs["tflm"]
    qemu_ref = qemu_runs["litert_ref"][1]
    sizes = _sizes(gen_dir, gen.kernels, work)
    tflm_arena = arena_bytes(model)
    cg_beats = min(200, n)
    toolchain.write_inputs(work / "cg_inputs.bin", [x[:cg_beats] for x in inputs])
    cg = toolchain.callgrind_instructions(exe, work / "cg_inputs.bin", work / "cg_outputs.bin", work)
    ram = gen.arena.size + q.stack_bytes
    return {
        "model": str(model_path), "model_sha256": gen.sha256, "records": records, "beats": n,
        "generator": gen.summary(),
        "bit_exact": {"host": host, "qemu_cortex_m4": qemu, "qemu_cortex_m4_litert_ref_rounding": qemu_ref,
                      "note": "identical_beats per reference interpreter for the C code generated with each "
                              "FULLY_CONNECTED rounding (tflm = default)"},
        "sizes_cortex_m4_Os": sizes,
        "ram": {"arena_bytes": gen.arena.size, "stack_bytes_measured": q.stack_bytes, "total": ram,
                "tflm_arena_bytes": tflm_arena, "ratio_to_tflm_arena": round(ram / tflm_arena, 3)},
        "flash": {"inference_path_bytes": sizes["inference_path"]["flash"],
                  "tflm_interpreter_published": TFLM_INTERPRETER_FLASH},
        "instructions_per_inference": {
            "cortex_m4_qemu_icount": round(q.instructions_per_inference),
            "cortex_m4_qemu_icount_max": q.max_instructions,
            "host_x86_64_O2_callgrind": round(cg["instructions"] / cg_beats),
            "macs": gen.macs,
            "method": "QEMU -icount shift=0 (1 ns of virtual time per instruction), SysTick ticks calibrated on a "
                      "2,000,000-instruction loop; callgrind Ir of pw_model_invoke on the host build as a proxy"},
        "targets": {
            "bit_exact_host_tflm": host["tflm"]["identical_beats"]["tflm"] == n,
            "bit_exact_qemu_tflm": qemu["identical_beats"]["tflm"] == q.beats,
            "bit_exact_qemu_litert_ref_with_litert_ref_rounding": qemu_ref["identical_beats"]["litert_ref"] == q.beats,
            "bit_exact_host_litert_ref_with_litert_ref_rounding":
                host["litert_ref"]["identical_beats"]["litert_ref"] == n,
            "ram_at_most_half_of_tflm_arena": ram <= 0.5 * tflm_arena},
        "seconds": round(time.time() - t0, 1),
    }


def bench_variant(path: Path, beats: int, records: list[str], data_dir: str | None, work: Path) -> dict:
    """A model variant (pruned, distilled, QAT...): does it generate, is it bit-exact on the host, how big."""
    from training.codegen import UnsupportedModel
    from training.codegen.references import BACKENDS
    from training.codegen.verify import agreement, reference_outputs, run_generated_host
    from training.tflm_check import arena_bytes

    model = path.read_bytes()
    try:
        inputs, n = _test_inputs(path, records, beats, data_dir)
        gen, outs, _ = run_generated_host(model, inputs, work, "tflm")
    except UnsupportedModel as exc:
        return {"model": str(path), "generated": False, "error": str(exc)}
    sizes = _sizes(work / "gen_tflm", gen.kernels, work)["inference_path"]
    return {"model": str(path), "generated": True, "sha256": gen.sha256, "ops": sorted(set(gen.ops)),
            "beats": n, "identical_beats": agreement(outs, reference_outputs(model, inputs, BACKENDS)).identical,
            "arena_bytes": gen.arena.size, "tflm_arena_bytes": arena_bytes(model), "flash_bytes": sizes["flash"],
            "macs": gen.macs}


def cmd_bench(args: argparse.Namespace) -> int:
    from training.codegen import UnsupportedModel
    from training.codegen.reader import ModelFormatError
    from training.codegen.toolchain import BuildError, ToolchainMissing

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pw-firmware-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_bench(Path(args.model), args.beats, args.qemu_beats, args.records, args.data_dir, work)
    except (ToolchainMissing, BuildError, UnsupportedModel, ModelFormatError) as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)  # a user-fixable error: exit 2, as tools/cli.py
        return 2
    from tools.firmware_frontend_bench import bench_frontend, bench_rpeak, default_mitdb

    fdir, rdir = work / "frontend", work / "rpeak"
    fdir.mkdir(exist_ok=True)
    rdir.mkdir(exist_ok=True)
    mitdb = default_mitdb(args.data_dir)
    result["frontend"] = bench_frontend(Path(args.model), "100", 180, mitdb, fdir)
    result["targets"]["frontend_m4_equals_host"] = result["frontend"]["cortex_m4_output_identical_to_host"]
    rp = result["frontend"]["rpeak"] = bench_rpeak(Path(args.model), RPEAK_RECORDS, ("208", 180), mitdb, rdir)
    result["targets"]["rpeak_m4_equals_host"] = all(rp["cortex_m4"][k]["identical_to_host"]
                                                    for k in ("detector", "adc_to_int8"))
    result["targets"]["rpeak_matches_python_99_5"] = all(
        min(w["matched_2_samples"] / w["python_peaks"], w["matched_2_samples"] / w["c_peaks"]) >= 0.995
        for w in rp["whole_records"])
    template = _template_section(Path(args.model), args.records, args.qemu_beats, args.data_dir, work / "template")
    if template is not None:
        result["template_features"] = template
        result["targets"]["template_host_equals_python_edge"] = (
            template["host_identical_to_edge_classifier_inputs_beats"] == template["beats"]
            and template["host_identical_q16_beats"] == template["beats"])
        result["targets"]["template_m4_equals_host"] = template["cortex_m4"]["identical_to_host_beats"] == \
            template["cortex_m4"]["beats"]
    result["variants"] = []
    for k, variant in enumerate(args.variants or []):
        vdir = work / f"variant{k}"
        vdir.mkdir(exist_ok=True)
        result["variants"].append(bench_variant(Path(variant), min(args.beats, 2000), args.records, args.data_dir, vdir))
        if result["variants"][-1].get("generated"):
            result["targets"][f"variant{k}_bit_exact_tflm"] = (
                result["variants"][-1]["identical_beats"]["tflm"] == result["variants"][-1]["beats"])
    result["command"] = "pulsewire firmware bench " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in (("model", args.model), ("beats", args.beats), ("qemu_beats", args.qemu_beats),
                     ("variants", args.variants)) if v)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(firmware_markdown(result))
    print(firmware_markdown(result))
    print(f"results: {out} and {out.with_suffix('.md')} ({result['seconds']} s)")
    return 0 if all(result["targets"].values()) else 1


def add_bench_parser(fsub) -> None:
    p = fsub.add_parser("bench", help="bit-exactness (host, Cortex-M4 under QEMU), flash/RAM, instructions",
                        description="Trains nothing: takes an int8 model with its .json metadata (e.g. from "
                                    "`pulsewire foundation --protocols inter --seeds 0 --epochs 8 --out out/fw`).")
    p.add_argument("--model", required=True, help="int8 .tflite with its .json metadata beside it")
    p.add_argument("--beats", type=int, default=7626, help="real test beats on the host (default: all of the records)")
    p.add_argument("--qemu-beats", type=int, default=1000, help="of those, run on the Cortex-M4 under QEMU")
    p.add_argument("--records", nargs="+", default=TEST_RECORDS, help="MIT-BIH records the beats come from")
    p.add_argument("--data-dir", help="MIT-BIH folder (default: $MITDB_DIR)")
    p.add_argument("--work", help="build folder (default: a temporary one)")
    p.add_argument("--variants", nargs="+", metavar="TFLITE", help="more int8 models (optimization variants) to "
                   "generate and check on the host (up to 2,000 beats each)")
    p.add_argument("--json", default="out/bench/firmware.json",
                   help="results path (default: out/bench/firmware.json; the committed bench/results/firmware.json "
                        "is written only when asked for, as `make bench` does)")
    p.set_defaults(func=cmd_bench)

"""The firmware benchmark's markdown report (bench/results/firmware.md)."""
from __future__ import annotations


def _rpeak_markdown(rp: dict) -> list[str]:
    def pct(v):
        return f"{100 * v:.2f}" if v is not None else "-"

    m4, ex = rp["cortex_m4"], rp["cortex_m4"]["excerpt"]
    lines = ["", "### R-peak detector in C (firmware/core/pw_rpeak.c)", "",
             ("Whole records, host build (gcc -O2) against edge_runtime/rpeak.py; both scored against the annotations "
             "(edge_runtime/scoring.py, 150 ms):"), "",
             ("| record | Python peaks | C peaks | matched within 2 samples | identical | Python Se / +P (%) | "
             "C Se / +P (%) |"), "|---|---|---|---|---|---|---|"]
    for w in rp["whole_records"]:
        lines.append(f"| {w['record']} | {w['python_peaks']} | {w['c_peaks']} | {w['matched_2_samples']} | "
                     f"{w['identical']} | {pct(w['python']['se'])} / {pct(w['python']['ppv'])} | "
                     f"{pct(w['c']['se'])} / {pct(w['c']['ppv'])} |")
    d, b = m4["detector"], m4["adc_to_int8"]
    lines += ["", (f"Cortex-M4 (QEMU, -Os), record {ex['record']}, first {ex['seconds']} s ({ex['samples']:,} samples): "
              f"{d['peaks']} peaks identical to the host build: {d['identical_to_host']}; the board path "
              f"(pw_frontend_push_adc: band-pass, detector, windows, RR, int8) gives {b['beats']} beats identical to "
              f"the host build: {b['identical_to_host']} ({b['late_peaks']} late peaks). Instructions per sample: "
              f"{d['instructions_per_sample']} for the detector, {b['instructions_per_sample']} for the whole ADC-to-int8 "
              f"path. State: pw_rpeak_t {m4['state_bytes']['pw_rpeak_t']} B, pw_frontend_t "
              f"{m4['state_bytes']['pw_frontend_t']} B; flash of pw_rpeak.o {m4['flash_bytes']['pw_rpeak.o']} B.")]
    return lines


def firmware_markdown(r: dict) -> str:
    h, q = r["bit_exact"]["host"], r["bit_exact"]["qemu_cortex_m4"]
    lines = [f"# Firmware benchmark: generated int8 C ({r['model_sha256'][:12]})", "",
             (f"Model `{r['model']}`, {r['beats']} real beats of records {', '.join(r['records'])}; "
             f"ops {', '.join(sorted(set(r['generator']['ops'])))}."), "",
             "## Bit-exactness (beats whose every output byte is identical)", "",
             "| C code (FC rounding) | where | vs TFLite-Micro | vs LiteRT BUILTIN_REF | vs LiteRT no delegates |",
             "|---|---|---|---|---|"]
    for mode in ("tflm", "litert", "litert_ref"):
        i = h[mode]["identical_beats"]
        lines.append(f"| {mode} | host gcc -O2 | {i['tflm']}/{r['beats']} | {i['litert_ref']}/{r['beats']} | "
                     f"{i['litert_builtin']}/{r['beats']} |")
    for mode, qr in (("tflm", q), ("litert_ref", r["bit_exact"]["qemu_cortex_m4_litert_ref_rounding"])):
        i = qr["identical_beats"]
        lines.append(f"| {mode} | Cortex-M4 (QEMU mps2-an386), -Os | {i['tflm']}/{qr['beats']} | {i['litert_ref']}/"
                     f"{qr['beats']} | {i['litert_builtin']}/{qr['beats']} |")
    s, ram, ins = r["sizes_cortex_m4_Os"]["inference_path"], r["ram"], r["instructions_per_inference"]
    lines += ["", "## Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os, arm-none-eabi-size)", "",
              "| quantity | bytes |", "|---|---|",
              (f"| flash of the inference path (.text {s['.text']} + .rodata {s['.rodata']} + .data {s['.data']}) | "
              f"{s['flash']} |"),
              f"| RAM: arena {ram['arena_bytes']} + measured stack {ram['stack_bytes_measured']} | {ram['total']} |",
              f"| TFLite-Micro arena for the same model | {ram['tflm_arena_bytes']} |",
              f"| ratio | {ram['ratio_to_tflm_arena']} |", "",
              f"TFLite-Micro's interpreter alone: {r['flash']['tflm_interpreter_published']}.", "",
              (f"Instructions per inference: {ins['cortex_m4_qemu_icount']:,} on the Cortex-M4 (QEMU icount, max "
              f"{ins['cortex_m4_qemu_icount_max']:,}); {ins['host_x86_64_O2_callgrind']:,} on x86-64 -O2 "
              f"(callgrind); {ins['macs']:,} MACs."), "",
              "Targets: " + ", ".join(f"{k} {'yes' if v else '**no**'}" for k, v in r["targets"].items()) + "."]
    if r.get("frontend"):
        f = r["frontend"]
        lines += ["", "## Streaming front-end in C (fixed point)", "",
                  (f"Record {f['record']}, first {f['seconds']} s ({f['samples']:,} samples, {f['beats']} beats, annotated "
                  f"R-peaks): {f['instructions_per_sample_cortex_m4']} instructions per sample on the Cortex-M4 "
                  f"(filter every sample; window, medians and RR per beat), state {f['state_bytes']} B of RAM, "
                  f"{f['flash_bytes_code_and_constants']} B of flash; M4 output identical to the host build: "
                  f"{f['cortex_m4_output_identical_to_host']}.")]
        if f.get("rpeak"):
            lines += _rpeak_markdown(f["rpeak"])
    if r.get("template_features"):
        t, m4 = r["template_features"], r["template_features"]["cortex_m4"]
        lines += ["", "## Template features in C (integers, firmware/core/pw_template.c)", "",
                  (f"{t['beats']:,} beats of the test records, each lead from a fresh template: Q16 features identical "
                  f"to the Python edge runtime's on {t['host_identical_q16_beats']:,}, int8 model inputs identical to "
                  f"the Python edge classifier's on {t['host_identical_to_edge_classifier_inputs_beats']:,} (host, gcc "
                  f"-O2). Cortex-M4 (QEMU, -Os): {m4['identical_to_host_beats']:,} of {m4['beats']:,} beats identical "
                  f"to the host build, {m4['instructions_per_beat']:,} instructions per beat, state "
                  f"{m4['state_bytes']} B.")]
    if r.get("variants"):
        lines += ["", "## Model variants (C generated with the default rounding, host build)", "",
                  "| model | ops | beats | = TFLM | = LiteRT ref | = LiteRT | arena / TFLM arena | flash |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in r["variants"]:
            if not v["generated"]:
                lines.append(f"| {v['model']} | not generated: {v['error']} | | | | | | |")
                continue
            i = v["identical_beats"]
            lines.append(f"| {v['model']} | {' '.join(v['ops'])} | {v['beats']} | {i['tflm']} | {i['litert_ref']} | "
                         f"{i['litert_builtin']} | {v['arena_bytes']} / {v['tflm_arena_bytes']} | {v['flash_bytes']} |")
    return "\n".join(lines) + "\n"

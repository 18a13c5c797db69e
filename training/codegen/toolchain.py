"""Builds and runs generated models with the toolchains installed here: the host gcc (unit tests,
bit-exactness, callgrind), arm-none-eabi-gcc for a Cortex-M4 (-mcpu=cortex-m4 -mthumb -Os) and
qemu-system-arm's mps2-an386 machine with semihosting. Every function raises ``ToolchainMissing`` with the
install command when a tool is absent, ``BuildError`` with the compiler's message when a build fails."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "firmware" / "core"
M4_BOARD = ROOT / "firmware" / "boards" / "cortex_m4"
RUNNER = ROOT / "firmware" / "tests" / "run_model.c"
WARNINGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-Os", "-ffunction-sections", "-fdata-sections"]
M4_LINK = ["-T", str(M4_BOARD / "mps2_an386.ld"), "--specs=nano.specs", "--specs=rdimon.specs", "-nostartfiles",
           "-Wl,--gc-sections"]
APT = "apt-get install -y gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm valgrind"


class ToolchainMissing(RuntimeError):
    pass


class BuildError(RuntimeError):
    pass


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolchainMissing(f"{tool} not found: `make setup` installs it ({APT})")
    return path


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def kernel_sources(kernels: tuple[str, ...]) -> list[str]:
    return [str(CORE / k) for k in kernels]


def build_host(gen_dir: Path, kernels: tuple[str, ...], exe: Path, opt: str = "-O2",
               extra: list[str] | None = None, runner: Path | None = None) -> Path:
    cmd = [need("gcc"), *WARNINGS, opt, f"-I{CORE}", f"-I{gen_dir}", str(Path(gen_dir) / "pw_model.c"),
           *kernel_sources(kernels), str(runner or RUNNER), *(extra or []), "-o", str(exe)]
    r = _run(cmd)
    if r.returncode:
        raise BuildError(f"host build failed:\n{r.stderr}")
    return exe


def build_cortex_m4(gen_dir: Path, kernels: tuple[str, ...], elf: Path, measure: bool = True,
                    main: Path | None = None, extra: list[str] | None = None) -> Path:
    cmd = [need("arm-none-eabi-gcc"), *WARNINGS, *M4_FLAGS, *(["-DPW_MEASURE"] if measure else []),
           f"-I{CORE}", f"-I{M4_BOARD}", f"-I{gen_dir}", str(Path(gen_dir) / "pw_model.c"), *kernel_sources(kernels),
           str(main or RUNNER), str(M4_BOARD / "startup.c"), *M4_LINK, *(extra or []), "-o", str(elf)]
    r = _run(cmd)
    if r.returncode:
        raise BuildError(f"Cortex-M4 build failed:\n{r.stderr}")
    return elf


def build_runner(srcs: list[str], config_dir: Path, out: Path, argv: list[str], m4: bool = False) -> Path:
    """A front-end test runner (its C sources and generated config header): host gcc -O2, or Cortex-M4 -Os for QEMU
    with ``argv`` compiled in (QEMU's semihosting passes no command line) and -DPW_MEASURE."""
    if m4:
        quoted = ",".join(f'"{a}"' for a in argv)
        cmd = [need("arm-none-eabi-gcc"), *WARNINGS, *M4_FLAGS, "-DPW_MEASURE", f"-DPW_ARGV={{{quoted},0}}",
               f"-I{CORE}", f"-I{M4_BOARD}", f"-I{config_dir}", *srcs, str(M4_BOARD / "startup.c"), *M4_LINK,
               "-o", str(out)]
    else:
        cmd = [need("gcc"), *WARNINGS, "-O2", f"-I{CORE}", f"-I{config_dir}", *srcs, "-o", str(out)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode:
        raise BuildError(r.stderr)
    return out


def write_inputs(path: Path, inputs: list[np.ndarray]) -> int:
    """Per beat, each input's int8 bytes in graph order (the runner's file format); returns beats."""
    beats = len(inputs[0])
    rows = np.concatenate([np.asarray(x, np.int8).reshape(beats, -1) for x in inputs], axis=1)
    rows.tofile(path)
    return beats


def read_outputs(path: Path, beats: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.fromfile(path, np.int8).reshape((beats,) + tuple(shape))


def run_host(exe: Path, inputs_bin: Path, outputs_bin: Path) -> str:
    r = _run([str(exe), str(inputs_bin), str(outputs_bin)])
    if r.returncode:
        raise BuildError(f"{exe.name} failed: {r.stdout}{r.stderr}")
    return r.stdout


@dataclass(frozen=True)
class QemuRun:
    beats: int
    stack_bytes: int
    instructions_per_inference: float
    max_instructions: int
    stdout: str


def run_qemu(elf: Path, workdir: Path, timeout: float = 600) -> QemuRun:
    """Runs the measuring runner on mps2-an386 with -icount shift=0; inputs.bin / outputs.bin in workdir."""
    qemu = need("qemu-system-arm")
    r = _run([qemu, "-M", "mps2-an386", "-nographic", "-semihosting", "-icount", "shift=0", "-kernel", str(elf)],
             cwd=workdir, timeout=timeout)
    if r.returncode:
        raise BuildError(f"QEMU run failed (exit {r.returncode}): {r.stdout}{r.stderr}")
    vals = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", r.stdout)}
    per_tick = vals["calibration_instructions"] / vals["calibration_ticks"]
    beats = vals["beats"]
    return QemuRun(beats, vals["stack_bytes"], vals["ticks_total"] * per_tick / max(beats, 1),
                   int(vals["ticks_max"] * per_tick), r.stdout)


def section_sizes(elf: Path) -> dict[str, int]:
    """`arm-none-eabi-size -A`: bytes per section."""
    r = _run([need("arm-none-eabi-size"), "-A", str(elf)])
    if r.returncode:
        raise BuildError(r.stderr)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)", r.stdout, re.M)}


def object_sizes(gen_dir: Path, kernels: tuple[str, ...], workdir: Path) -> dict[str, dict[str, int]]:
    """text / data / bss of each object (-Os, Cortex-M4) from `arm-none-eabi-size` (Berkeley format:
    text includes .rodata)."""
    cc, size = need("arm-none-eabi-gcc"), need("arm-none-eabi-size")
    out: dict[str, dict[str, int]] = {}
    for src in [Path(gen_dir) / "pw_model.c", *map(Path, kernel_sources(kernels))]:
        obj = Path(workdir) / (src.stem + ".o")
        r = _run([cc, *WARNINGS, *M4_FLAGS, f"-I{CORE}", f"-I{gen_dir}", "-c", str(src), "-o", str(obj)])
        if r.returncode:
            raise BuildError(r.stderr)
        line = _run([size, str(obj)]).stdout.splitlines()[1].split()
        out[src.name] = {"text": int(line[0]), "data": int(line[1]), "bss": int(line[2])}
    return out


def callgrind_instructions(exe: Path, inputs_bin: Path, outputs_bin: Path, workdir: Path) -> dict[str, int]:
    """Instructions (Ir) of pw_model_invoke inclusive, over all beats, from callgrind on the host build."""
    valgrind = need("valgrind")
    out = Path(workdir) / "callgrind.out"
    r = _run([valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=pw_model_invoke",
              str(exe), str(inputs_bin), str(outputs_bin)], timeout=1200)
    if r.returncode:
        raise BuildError(f"callgrind failed: {r.stderr[-2000:]}")
    total = 0
    for line in out.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
    return {"instructions": total}

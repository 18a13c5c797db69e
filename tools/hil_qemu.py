"""A device under test without hardware: the generated firmware for a model (its C model, the C front-end
and R-peak detector, the HIL protocol of firmware/core/pw_hil.c) built for a Cortex-M4 and run on QEMU's
mps2-an386 with its UART on a pty, which ``pulsewire hil`` then opens like /dev/ttyACM0."""
from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path

from training.codegen import toolchain

log = logging.getLogger("pulsewire.hil")
HIL_MAIN = toolchain.M4_BOARD / "hil_main.c"
HIL_HOST_RUNNER = toolchain.ROOT / "firmware" / "tests" / "run_hil.c"
#: the board-independent C a HIL build needs besides the generated model and its kernels
HIL_CORE = ("pw_frontend.c", "pw_rpeak.c", "pw_template.c", "pw_hil.c")


def generate_firmware_sources(model_path: Path, out: Path, adc_gain: float = 200.0) -> tuple[str, ...]:
    """pw_model.{h,c}, pw_frontend_config.h and pw_selftest_beat.h for the model in ``out``; returns the
    kernel sources (firmware/core) the model needs."""
    from edge_runtime.model_metadata import ModelMetadata, metadata_path_for
    from training.codegen import generate_c, write_sources
    from training.codegen.frontend import frontend_config
    from training.codegen.selftest_beat import selftest_beat_header

    model = Path(model_path).read_bytes()
    meta = ModelMetadata.load(metadata_path_for(Path(model_path)))
    gen = generate_c(model)
    out.mkdir(parents=True, exist_ok=True)
    write_sources(gen, out)
    (out / "pw_frontend_config.h").write_text(frontend_config(meta, adc_gain))
    (out / "pw_selftest_beat.h").write_text(selftest_beat_header(model, meta))
    return gen.kernels


def build_hil_elf(model_path: Path, work: Path, adc_gain: float = 200.0) -> Path:
    """arm-none-eabi-gcc -Os with -Wall -Wextra -Werror: the QEMU device under test for ``model_path``."""
    gen_dir = work / "gen"
    kernels = generate_firmware_sources(model_path, gen_dir, adc_gain)
    return toolchain.build_cortex_m4(gen_dir, kernels, work / "hil.elf", measure=False, main=HIL_MAIN,
                                     extra=toolchain.kernel_sources(HIL_CORE))


def build_hil_host(model_path: Path, work: Path) -> Path:
    """gcc -O2 with -Wall -Wextra -Werror: firmware/tests/run_hil.c, the protocol on stdin / stdout."""
    gen_dir = work / "gen"
    kernels = generate_firmware_sources(model_path, gen_dir)
    return toolchain.build_host(gen_dir, kernels, work / "run_hil",
                                extra=toolchain.kernel_sources(HIL_CORE), runner=HIL_HOST_RUNNER)


class QemuDevice:
    """``with QemuDevice(elf) as port:`` a running mps2-an386 whose UART0 is the pty ``port``."""

    def __init__(self, elf: Path, start_timeout_s: float = 15.0) -> None:
        self.elf = Path(elf)
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> str:
        cmd = [toolchain.need("qemu-system-arm"), "-M", "mps2-an386", "-nographic", "-monitor", "none",
               "-semihosting", "-serial", "pty", "-kernel", str(self.elf)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + self.start_timeout_s
        assert self._proc.stdout is not None
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()  # QEMU announces the pty before the guest runs
            if not line:
                break
            seen.append(line)
            m = re.search(r"char device redirected to (/dev/pts/\d+)", line)
            if m:
                log.info("QEMU mps2-an386 running %s, UART0 on %s", self.elf.name, m.group(1))
                return m.group(1)
        self.__exit__(None, None, None)
        raise toolchain.BuildError(f"QEMU did not open a pty for the UART: {''.join(seen)[-1000:]}")

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

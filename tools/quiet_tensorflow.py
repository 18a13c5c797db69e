"""TensorFlow's start-up noise kept off the terminal of CLI users.

Importing TensorFlow prints, from C++ before Python logging exists, that no CUDA driver was found, that
oneDNN is on and which CPU instructions the binary could use: harmless, but a new user reads them as
errors. ``TF_CPP_MIN_LOG_LEVEL`` does not reach the messages logged before absl is initialised, so the
first ``import tensorflow`` runs with file descriptor 2 captured, and only lines that are not known
start-up noise are written back. Commands that never import TensorFlow pay nothing: the capture is a
meta-path hook that acts only on that import. oneDNN stays on (turning it off would change numbers).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

#: Start-up lines of TensorFlow 2.x on a CPU-only machine (absl pre-init, CUDA stubs, oneDNN, CPU guard).
NOISE = re.compile(r"All log messages before absl::InitializeLog|cudart_stub\.cc|cuda_(dnn|fft|blas)\.cc|"
                   r"Unable to register cu|oneDNN custom operations|cpu_feature_guard\.cc|"
                   r"To enable the following instructions|computation_placer|TF-TRT Warning|"
                   r"Could not find cuda drivers|cuInit|failed call to cuInit")


@contextmanager
def filtered_stderr(noise: re.Pattern = NOISE) -> Iterator[None]:
    """Capture fd 2 (C++ writes there directly) and replay what is not ``noise`` when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self._inner.exec_module(module)
            module.config.list_physical_devices()  # device discovery (cuInit) logs its own noise

    def __getattr__(self, name: str):  # resource readers and the like
        return getattr(self._inner, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: later imports are cached anyway
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def silence_tensorflow_startup() -> None:
    """Call once, early in a CLI entry point (before anything imports TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())

"""The optional extras: heavy packages only some engines and commands need, and the one-line hint
when one is missing (`pip install 'mmfree-cli[EXTRA]'`). `pip install 'mmfree-cli[all]'` (and the
dev extra) installs every one."""

from __future__ import annotations

from .errors import UserError

EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "fastapi": "serve", "uvicorn": "serve",
          "numba": "cpu", "llvmlite": "cpu", "mfusepy": "fpga"}
"""importable module → the extra that installs it."""
NEEDED_BY = {"onnx": "the onnx export and engine", "serve": "`mmfree serve`",
             "cpu": "the cpu (integer) engine", "fpga": "the emulated FPGA card"}


def missing_extra(error: ModuleNotFoundError) -> UserError | None:
    """The one-line hint for a missing optional package, or None when `error` is about another one."""
    top = (error.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return UserError(f"{NEEDED_BY[extra]} needs {top}, which is not installed — "
                     f"pip install 'mmfree-cli[{extra}]' (or 'mmfree-cli[all]')")

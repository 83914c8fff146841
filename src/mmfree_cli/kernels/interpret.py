"""Whether Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1), as they do on CPU-only
machines so every kernel still meets its PyTorch twin: launchers pick smaller tiles then."""

import os


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"

"""Fast paths and their plain-PyTorch twins.

Each op lives in its own folder (flash-linear-attention style): `naive.py` is the spec, written in
plain PyTorch; faster kernels sit beside it; the folder's `__init__` exports the one public function
that layers call and that picks a kernel by device.
"""

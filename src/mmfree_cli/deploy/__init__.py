"""Putting an FPGA bundle on a card and talking to it: the XDMA transport (xdma.py), the core's
host protocol (card.py), reading bundles (bundle.py), `mmfree deploy` (deploy.py) and the emulated
card behind XDMA-like nodes (emulator/)."""

"""`mmfree deploy --device /dev/xdma0`: put an FPGA bundle on a card that already holds its design.

    identify  MAGIC, register map VERSION and DESIGN_ID against the manifest (refuse unless --force)
    upload    weights.bin to card memory at WEIGHTS (h2c DMA)
    verify    read it back (c2h) and check every block's sha256 from the manifest
    self-test the bundle's golden decode steps on the card, logits and final state bit for bit
    ready     address registers written, recurrent state zeroed

XDMA cannot program an FPGA, and deploy never claims to: `--program CMD` runs an external tool that
must be on PATH (`{bitstream}` in CMD becomes the bundle's XDMA-capable bitstream) and reports
exactly what it ran.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..formats.fpga import Bundle
from .card import Card
from .xdma import Xdma


def program_card(command: str, bundle: Bundle) -> str:
    """Run the user's programming tool; returns the command line that ran."""
    argv = shlex.split(command)
    if not argv or shutil.which(argv[0]) is None:
        raise UserError(f"--program: {argv[0] if argv else '(empty)'} not found on PATH — install your "
                        "programming tool (e.g. openFPGALoader, vivado_lab) or program the card by hand")
    if any("{bitstream}" in a for a in argv):
        usable = [b for b in bundle.bitstreams() if b.get("xdma_capable")]
        if not usable:
            raise UserError(f"{bundle.path}: no XDMA-capable bitstream in the bundle — add the vendor-built "
                            "one with `mmfree export --target fpga --bitstream FILE`")
        argv = [a.replace("{bitstream}", str(bundle.path / usable[0]["path"])) for a in argv]
    ran = shlex.join(argv)
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        raise UserError(f"--program: `{ran}` exited with {result.returncode} ({tail[0]}) — the card was not programmed")
    return ran


def self_test(card: Card, bundle: Bundle, steps: int | None) -> dict:
    """Run the golden decode steps from the zero state; raise on the first difference."""
    golden = bundle.golden()
    rows, want = golden["embed_rows"], golden["logits"]
    n = len(rows) if steps is None else min(steps, len(rows))
    card.write_state(np.zeros((card.layers, card.d), dtype=np.int32))
    for t in range(n):
        got = card.step(rows[t])
        bad = np.flatnonzero(got != want[t])
        if bad.size:
            i = bad[0]
            raise UserError(f"self-test: step {t}: {bad.size} of {card.vocab} logits differ from the golden vectors "
                            f"(first at {i}: card {got[i]}, golden {want[t][i]}) — the card computes differently "
                            "from this bundle; check the design and re-deploy")
    state_checked = n == len(rows)
    if state_checked and not np.array_equal(card.read_state(), golden["state"]):
        raise UserError("self-test: the final recurrent state differs from the golden vectors — the card "
                        "computes differently from this bundle; check the design and re-deploy")
    return {"steps": n, "state_checked": state_checked, "counters": card.counters()}


def deploy(bundle_path: str | Path | None, device: str, force: bool = False, program: str | None = None,
           selftest_steps: int | None = None, timeout: float = 10.0, wait: str = "irq",
           say: Callable[[str], None] = lambda line: None) -> dict:
    """Identify the card, upload, verify and self-test the bundle; returns the report."""
    from ..paths import latest_export
    bundle = Bundle.open(bundle_path if bundle_path is not None else latest_export("fpga"))
    image = bundle.weights()
    report: dict = {"bundle": str(bundle.path), "device": device}
    if program:
        report["programmed_with"] = program_card(program, bundle)
        say(f"program   ran `{report['programmed_with']}` (exit 0)")
    with Xdma(device) as xdma:
        card = Card(xdma, bundle.manifest, timeout=timeout, wait=wait)
        ident = card.check_identity(force)
        report["card"] = ident.describe()
        match = "matches the bundle" if ident.design_id == int(bundle.design_id, 16) else \
            f"DIFFERS from the bundle's {bundle.design_id} (--force)"
        say(f"card      {device}: mmfree core v{report['card']['version']}, design {report['card']['design_id']} "
            f"({match}), {report['card']['lanes']} lanes")
        seconds = card.upload(image)
        report["upload"] = {"bytes": len(image), "seconds": round(seconds, 4)}
        say(f"upload    {len(image)} bytes in {seconds:.2f} s ({len(image) / max(seconds, 1e-9) / 1e6:.1f} MB/s)")
        bad = card.verify()
        if bad:
            b = bad[0]
            raise UserError(f"verify: block {b['name']} at card address {b['card_address']:#x} ({b['bytes']} bytes) "
                            f"reads back different from weights.bin ({len(bad)} bad block(s)) — the upload was "
                            "corrupted; check the PCIe link (dmesg) and deploy again")
        report["verify"] = {"blocks": len(bundle.manifest["weights"]["blocks"]), "ok": True}
        say(f"verify    {report['verify']['blocks']} blocks read back, every sha256 matches")
        card.set_addresses()
        t0 = time.perf_counter()
        report["self_test"] = self_test(card, bundle, selftest_steps)
        report["self_test"]["seconds"] = round(time.perf_counter() - t0, 4)
        st = report["self_test"]
        say(f"self-test {st['steps']} golden decode steps bit-exact"
            f"{' (logits and final state)' if st['state_checked'] else ' (logits)'} in {st['seconds']:.2f} s")
        card.write_state(np.zeros((card.layers, card.d), dtype=np.int32))
    say(f"ready     mmfree chat --engine fpga --device {device}")
    return report

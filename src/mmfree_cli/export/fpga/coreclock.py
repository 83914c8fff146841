"""The core's own clock on a board: what the Clocking Wizard is asked for, and why.

Never XDMA's axi_aclk (250 MHz on a Gen3 x16 link): the core has its own clock domain, and the
SmartConnects cross between the two. The frequency comes from one of two places:

- the bundle's Fmax report (`reports/synth.json`, `fmax_mhz`: post-route on the open flow's device),
  rounded down to a frequency the board's MMCM makes exactly from its reference oscillator; or
- a value the user states with `--core-mhz`, which may not exceed the report when there is one.

With neither, there is no clock to give and the export refuses: a clock nobody measured or chose
would be a guess written into a bitstream.

The MMCM model (UltraScale+ MMCME4): f_out = f_ref · M / (D · O), M and O in steps of 1/8, D an
integer, the VCO f_ref · M / D within 800–1600 MHz and the phase detector f_ref / D within
10–500 MHz. Asking the wizard for an exactly reachable frequency keeps it from rounding up.
"""

from __future__ import annotations

import json
from fractions import Fraction
from math import floor
from pathlib import Path

from ...errors import UserError
from .boards import Board

VCO_MHZ = (800, 1600)
PFD_MHZ = (10, 500)
DIVIDE_MAX = 128
MIN_CORE_MHZ = 10


def exact(ref_mhz: float, mhz: int) -> bool:
    """Whether an MMCM fed with ref_mhz makes exactly `mhz` on one output."""
    ref, want = Fraction(ref_mhz), Fraction(mhz)
    for d in range(1, 11):
        pfd = ref / d
        if not PFD_MHZ[0] <= pfd <= PFD_MHZ[1]:
            continue
        for eighths in range(16, 8 * DIVIDE_MAX + 1):   # M = 2 .. 128 in steps of 1/8
            vco = pfd * Fraction(eighths, 8)
            if not VCO_MHZ[0] <= vco <= VCO_MHZ[1]:
                continue
            o = vco / want
            if (o * 8).denominator == 1 and 1 <= o <= DIVIDE_MAX:
                return True
    return False


def reachable_at_most(ref_mhz: float, limit_mhz: float) -> int:
    """The highest whole MHz not above limit_mhz that the MMCM makes exactly."""
    for mhz in range(floor(limit_mhz), MIN_CORE_MHZ - 1, -1):
        if exact(ref_mhz, mhz):
            return mhz
    raise UserError(f"no core clock between {MIN_CORE_MHZ} and {limit_mhz:g} MHz can be made from the "
                    f"board's {ref_mhz:g} MHz reference — check the Fmax report")


def read_report(path: Path) -> dict | None:
    """The bundle's synth report (reports/synth.json), if --synth wrote one."""
    return json.loads(path.read_text()) if path.is_file() else None


def fmax_of(synth_report: dict | None) -> float | None:
    if not synth_report or synth_report.get("fmax_mhz") is None:
        return None
    return float(synth_report["fmax_mhz"])


def choose(board: Board, synth_report: dict | None, stated_mhz: float | None) -> dict:
    """{"mhz", "source", "fmax_mhz", "note"}: the core clock for `board`, or a one-line refusal."""
    fmax = fmax_of(synth_report)
    if stated_mhz is not None:
        if stated_mhz < MIN_CORE_MHZ:
            raise UserError(f"--core-mhz {stated_mhz:g}: below {MIN_CORE_MHZ} MHz — give a clock of at least {MIN_CORE_MHZ}")
        if fmax is not None and stated_mhz > fmax:
            raise UserError(f"--core-mhz {stated_mhz:g}: above the core's Fmax report ({fmax:g} MHz in "
                            "reports/synth.json) — give a lower clock or leave --core-mhz out")
        mhz = reachable_at_most(board.core_clk_ref_mhz, stated_mhz)
        source = "stated with --core-mhz" + ("" if fmax is None else f" (Fmax report: {fmax:g} MHz)")
    elif fmax is not None:
        mhz = reachable_at_most(board.core_clk_ref_mhz, fmax)
        grade = f", speed grade {synth_report['speed_grade']}" if "speed_grade" in synth_report else ""
        build = "" if synth_report.get("shipped_build", True) else ", of the largest build that fits that part"
        source = f"Fmax report reports/synth.json ({fmax:g} MHz on {synth_report.get('device', 'the open flow')}{grade}{build})"
    else:
        raise UserError(f"--board {board.name}: no core clock — add --synth ecp5 (measures the core's Fmax, "
                        "takes minutes) or --core-mhz N (a clock you choose)")
    note = (f"{mhz} MHz is the highest whole MHz at or below the "
            f"{'stated value' if stated_mhz is not None else 'Fmax report'} that the MMCM makes exactly from "
            f"the board's {board.core_clk_ref_mhz:g} MHz reference. The Fmax report is for the open flow's device, "
            "not this FPGA: Vivado's timing report after route is what decides.")
    return {"mhz": mhz, "source": source, "fmax_mhz": fmax, "note": note}

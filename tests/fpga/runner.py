"""Build and run a cocotb testbench on Icarus through cocotb's runner (cocotb_tools.runner)."""

from __future__ import annotations

import sys
from pathlib import Path

from cocotb_tools.runner import get_runner

TESTS = Path(__file__).resolve().parent
TEMPLATES = TESTS.parent.parent / "templates" / "fpga"


def run_cocotb(toplevel: str, test_module: str, sources: list[Path], build_dir: Path,
               parameters: dict | None = None, env: dict | None = None, includes: list[Path] = (),
               test_dir: Path | None = None) -> None:
    """Compile `sources` with Icarus and run `test_module` (a file in tests/fpga/); fail on any failure.

    `test_dir` is where the simulator runs ($readmemh paths are relative to it)."""
    runner = get_runner("icarus")
    runner.build(sources=[str(s) for s in sources], hdl_toplevel=toplevel, build_dir=str(build_dir),
                 parameters=parameters or {}, always=True, timescale=("1ns", "1ps"),
                 includes=[str(i) for i in includes])
    if str(TESTS) not in sys.path:  # the runner hands sys.path to the simulator's Python
        sys.path.insert(0, str(TESTS))
    extra = {k: str(v) for k, v in (env or {}).items()}
    results = runner.test(hdl_toplevel=toplevel, test_module=test_module,
                          test_dir=str(test_dir or build_dir), build_dir=str(build_dir), extra_env=extra)
    from cocotb_tools.check_results import get_results
    total, failed = get_results(Path(results))
    assert total > 0 and failed == 0, f"{test_module}: {failed} of {total} cocotb tests failed"

"""Throughput estimates for the bundle's reports/: placeholder until calibrated from RTL simulation."""

from __future__ import annotations

from pathlib import Path

from ...fileio import write_json
from .compiler import Compiled, CoreParams


def write_report(out: Path, compiled: Compiled, params: CoreParams) -> str:
    write_json(out / "estimates.json", {"label": "ESTIMATE", "matvec_words_per_token": compiled.matvec_words})
    return "reports/estimates.json"

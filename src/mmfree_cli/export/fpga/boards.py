"""The boards `mmfree export --target fpga --board NAME` can write a vendor build for.

A board is data: the FPGA part, the Vivado board part, the names of the board interfaces the block
design connects to (PCIe edge, DDR4, clocks, resets), the card memory behind its DDR4 controller and
what its configuration flash needs. `vivado.py` turns one entry into `vivado/settings.tcl`; the
Tcl scripts never name a board themselves. Interface names are glob patterns because AMD renamed
some of them between board-file revisions (`ddr4_sdram_c1` became `ddr4_sdram_c1_083`): the
block-design script resolves each pattern against the installed board files and stops with the
list of available names when none matches.

Nothing here was checked against a physical board or a Vivado install; the values come from the
boards' user guides and board files as published by AMD.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UserError


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    part: str
    """FPGA part number (device-package-speed)."""
    board_part: str
    """Vivado board part, a glob: build.tcl picks the newest installed revision that matches."""
    board_part_known: str
    """A revision of the board part this table was written against (documentation only)."""
    device: str
    """The device core of `part` as a .bit header names it (e.g. vu9p): --bitstream checks it."""
    pcie_lanes: str
    pcie_speed: str
    xdma_axi_width: str
    xdma_aclk_mhz: int
    """XDMA's axi_aclk at this link width and speed: the DMA side's clock, never the core's."""
    interfaces: dict[str, str]
    """role -> board interface glob (pcie, pcie_refclk, pcie_perstn, ddr4, ddr4_clk, reset, core_clk)."""
    core_clk_ref_mhz: float
    """Frequency of the oscillator behind interfaces['core_clk'] (the Clocking Wizard's input)."""
    reset_active_high: bool
    ddr4_bytes: int
    """Card memory behind the DDR4 controller the design uses; the card address map starts at 0."""
    ddr4_axi_addr_w: int
    ddr4_axi_width: int
    ddr4_clk_ref_mhz: float
    """Frequency of the oscillator behind interfaces['ddr4_clk'] (the DDR4 controller's reference)."""
    flash: dict[str, str] = field(default_factory=dict)
    """Configuration flash: the part Vivado's hardware manager names and write_cfgmem's interface and size (MB)."""
    config: dict[str, str] = field(default_factory=dict)
    """Bitstream and configuration properties the board files do not set (constraints.xdc)."""
    guide: str = ""


BOARDS: dict[str, Board] = {
    "vcu118": Board(
        name="vcu118",
        title="AMD Virtex UltraScale+ FPGA VCU118 Evaluation Kit",
        part="xcvu9p-flga2104-2L-e",
        board_part="xilinx.com:vcu118:part0:*",
        board_part_known="xilinx.com:vcu118:part0:2.4",
        device="vu9p",
        pcie_lanes="X16",
        pcie_speed="8.0_GT/s",
        xdma_axi_width="512_bit",
        xdma_aclk_mhz=250,
        interfaces={
            "pcie": "pci_express_x16",
            "pcie_refclk": "pcie_refclk",
            "pcie_perstn": "pcie_perstn",
            "ddr4": "ddr4_sdram_c1*",
            "ddr4_clk": "default_250mhz_clk1",
            "reset": "reset",
            "core_clk": "default_sysclk1_300",
        },
        core_clk_ref_mhz=300.0,
        reset_active_high=True,
        ddr4_bytes=2 << 30,
        ddr4_axi_addr_w=31,
        ddr4_axi_width=512,
        ddr4_clk_ref_mhz=250.0,
        flash={"part": "mt25qu01g-spi-x1_x2_x4_x8", "interface": "SPIx8", "size_mb": "256"},
        config={
            "CONFIG_VOLTAGE": "1.8",
            "CFGBVS": "GND",
            "BITSTREAM.GENERAL.COMPRESS": "TRUE",
            "BITSTREAM.CONFIG.EXTMASTERCCLK_EN": "{DIV-1}",
            "BITSTREAM.CONFIG.SPI_BUSWIDTH": "8",
            "BITSTREAM.CONFIG.SPI_32BIT_ADDR": "YES",
            "BITSTREAM.CONFIG.SPI_FALL_EDGE": "YES",
            "BITSTREAM.CONFIG.OVERTEMPSHUTDOWN": "ENABLE",
        },
        guide="UG1224 (VCU118 board user guide), PG195 (XDMA), PG150 (DDR4), PG065 (Clocking Wizard)",
    ),
}


def board(name: str) -> Board:
    """The board called `name`, or a one-line error listing the ones there are."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise UserError(f"--board {name}: unknown board — choose one of {', '.join(BOARDS)}") from None

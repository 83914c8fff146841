# Block design of the mmfree core on a PCIe card (written by `mmfree export --target fpga --board`).
#
#   host --PCIe--> XDMA --M_AXI (DMA, h2c/c2h)----> mem_smc --> DDR4 controller --> card DDR4
#                       --M_AXI_LITE (BAR, _user)--> lite_smc --> mmf_core s_axil (registers)
#                  mmf_core m_axi ------------------> mem_smc          (the same card addresses)
#                  mmf_core irq --(2-flop sync)-----> XDMA usr_irq_req[0]  (/dev/xdma0_events_0)
#   board oscillator --> Clocking Wizard --> core_clk (the core's own clock, MMF(core_mhz) MHz)
#
# Three clock domains: XDMA's axi_aclk, the core clock and the DDR4 controller's ui clock. The
# SmartConnects cross between them. Each domain has its own reset block.
#
# Every value that depends on the board or the model comes from settings.tcl and address_map.tcl
# beside this file (generated from the same tables as the bundle's manifest). Sourced by build.tcl,
# or by FuseSoC's vivado target, inside an open project whose board_part is set and which holds
# rtl/*.v and mmf_bd_core.v. NOT RUN in the mmfree project (it has no Vivado): see README.md.

set mmf_here [file dirname [file normalize [info script]]]
source [file join $mmf_here settings.tcl]
source [file join $mmf_here address_map.tcl]

# The newest version of an AMD IP in this Vivado install (the VLNV without a version).
proc mmf_ip {name} {
    set defs [lsort -dictionary [get_ipdefs -all "xilinx.com:ip:${name}:*"]]
    if {[llength $defs] == 0} {
        error "mmfree: IP xilinx.com:ip:$name is not in this Vivado install"
    }
    return [lindex $defs end]
}

# The board interface of the project's board part that matches a glob, or stop with the choices.
proc mmf_board_if {pattern} {
    set all [get_board_part_interfaces -quiet *]
    foreach candidate [lsort $all] {
        if {[string match $pattern $candidate]} {
            return $candidate
        }
    }
    error "mmfree: the board files have no interface matching '$pattern'; they have: [lsort $all]"
}

proc mmf_cell {name ip props} {
    set cell [create_bd_cell -type ip -vlnv [mmf_ip $ip] $name]
    if {[llength $props] > 0} {
        set_property -dict $props $cell
    }
    return $cell
}

if {[get_property board_part [current_project]] eq ""} {
    error "mmfree: the project has no board part; source build.tcl, or set board_part to $MMF(board_part) first"
}

create_bd_design $MMF(bd)
current_bd_design $MMF(bd)

# ---- board ports (pins and I/O standards come from the board files through the IPs' board interfaces)
set if_pcie    [mmf_board_if $MMF(if_pcie)]
set if_refclk  [mmf_board_if $MMF(if_pcie_refclk)]
set if_perstn  [mmf_board_if $MMF(if_pcie_perstn)]
set if_ddr4    [mmf_board_if $MMF(if_ddr4)]
set if_ddr4clk [mmf_board_if $MMF(if_ddr4_clk)]
set if_reset   [mmf_board_if $MMF(if_reset)]
set if_coreclk [mmf_board_if $MMF(if_core_clk)]

create_bd_intf_port -mode Master -vlnv xilinx.com:interface:pcie_7x_mgt_rtl:1.0 $if_pcie
create_bd_intf_port -mode Slave -vlnv xilinx.com:interface:diff_clock_rtl:1.0 $if_refclk
set_property CONFIG.FREQ_HZ 100000000 [get_bd_intf_ports $if_refclk]
create_bd_port -dir I -type rst $if_perstn
set_property CONFIG.POLARITY ACTIVE_LOW [get_bd_ports $if_perstn]
create_bd_intf_port -mode Master -vlnv xilinx.com:interface:ddr4_rtl:1.0 $if_ddr4
create_bd_intf_port -mode Slave -vlnv xilinx.com:interface:diff_clock_rtl:1.0 $if_ddr4clk
set_property CONFIG.FREQ_HZ $MMF(ddr4_clk_hz) [get_bd_intf_ports $if_ddr4clk]
create_bd_intf_port -mode Slave -vlnv xilinx.com:interface:diff_clock_rtl:1.0 $if_coreclk
set_property CONFIG.FREQ_HZ $MMF(core_ref_hz) [get_bd_intf_ports $if_coreclk]
create_bd_port -dir I -type rst $if_reset
set_property CONFIG.POLARITY $MMF(reset_polarity) [get_bd_ports $if_reset]

# ---- PCIe: reference clock buffer and XDMA (AXI memory-mapped, an AXI-Lite BAR, one user IRQ)
mmf_cell pcie_refclk_buf util_ds_buf [list \
    CONFIG.C_BUF_TYPE IBUFDSGTE \
    CONFIG.DIFF_CLK_IN_BOARD_INTERFACE $if_refclk \
    CONFIG.USE_BOARD_FLOW true]
mmf_cell xdma_0 xdma [list \
    CONFIG.PCIE_BOARD_INTERFACE $if_pcie \
    CONFIG.SYS_RST_N_BOARD_INTERFACE $if_perstn \
    CONFIG.mode_selection Advanced \
    CONFIG.pl_link_cap_max_link_width $MMF(pcie_lanes) \
    CONFIG.pl_link_cap_max_link_speed $MMF(pcie_speed) \
    CONFIG.axi_data_width $MMF(xdma_axi_width) \
    CONFIG.axisten_freq $MMF(xdma_aclk_mhz) \
    CONFIG.xdma_axi_intf_mm AXI_Memory_Mapped \
    CONFIG.xdma_rnum_chnl 1 \
    CONFIG.xdma_wnum_chnl 1 \
    CONFIG.axilite_master_en true \
    CONFIG.axilite_master_size 1 \
    CONFIG.axilite_master_scale Megabytes \
    CONFIG.xdma_num_usr_irq 1]
connect_bd_intf_net [get_bd_intf_ports $if_refclk] [get_bd_intf_pins pcie_refclk_buf/CLK_IN_D]
connect_bd_net [get_bd_pins pcie_refclk_buf/IBUF_OUT] [get_bd_pins xdma_0/sys_clk_gt]
connect_bd_net [get_bd_pins pcie_refclk_buf/IBUF_DS_ODIV2] [get_bd_pins xdma_0/sys_clk]
connect_bd_net [get_bd_ports $if_perstn] [get_bd_pins xdma_0/sys_rst_n]
connect_bd_intf_net [get_bd_intf_pins xdma_0/pcie_mgt] [get_bd_intf_ports $if_pcie]

# ---- card memory: the DDR4 controller with an AXI slave port
mmf_cell ddr4_0 ddr4 [list \
    CONFIG.C0_DDR4_BOARD_INTERFACE $if_ddr4 \
    CONFIG.C0_CLOCK_BOARD_INTERFACE $if_ddr4clk \
    CONFIG.RESET_BOARD_INTERFACE $if_reset \
    CONFIG.C0.DDR4_AxiSelection true \
    CONFIG.C0.DDR4_AxiDataWidth $MMF(ddr4_axi_width) \
    CONFIG.C0.DDR4_AxiAddressWidth $MMF(ddr4_axi_addr_w)]
connect_bd_intf_net [get_bd_intf_pins ddr4_0/C0_DDR4] [get_bd_intf_ports $if_ddr4]
connect_bd_intf_net [get_bd_intf_ports $if_ddr4clk] [get_bd_intf_pins ddr4_0/C0_SYS_CLK]
connect_bd_net [get_bd_ports $if_reset] [get_bd_pins ddr4_0/sys_rst]

# ---- the core's own clock: never XDMA's axi_aclk
mmf_cell core_clk_wiz clk_wiz [list \
    CONFIG.CLK_IN1_BOARD_INTERFACE $if_coreclk \
    CONFIG.USE_BOARD_FLOW true \
    CONFIG.PRIM_SOURCE Differential_clock_capable_pin \
    CONFIG.PRIM_IN_FREQ $MMF(core_ref_mhz) \
    CONFIG.CLKOUT1_REQUESTED_OUT_FREQ $MMF(core_mhz) \
    CONFIG.USE_LOCKED true \
    CONFIG.USE_RESET true \
    CONFIG.RESET_TYPE $MMF(reset_type)]
connect_bd_intf_net [get_bd_intf_ports $if_coreclk] [get_bd_intf_pins core_clk_wiz/CLK_IN1_D]
connect_bd_net [get_bd_ports $if_reset] [get_bd_pins core_clk_wiz/reset]

# ---- the core, through its Vivado wrapper (interface attributes and the IRQ synchroniser)
if {[catch {create_bd_cell -type module -reference $MMF(core_module) mmf_core} why]} {
    error "mmfree: cannot add module $MMF(core_module) ($why); add rtl/*.v and vivado/$MMF(core_module).v to the project first"
}

# ---- resets: one block per clock domain
mmf_cell rst_pcie proc_sys_reset {}
mmf_cell rst_core proc_sys_reset {}
mmf_cell rst_ddr4 proc_sys_reset [list CONFIG.C_EXT_RESET_HIGH 1]
connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins rst_pcie/slowest_sync_clk]
connect_bd_net [get_bd_pins xdma_0/axi_aresetn] [get_bd_pins rst_pcie/ext_reset_in] [get_bd_pins rst_core/ext_reset_in]
connect_bd_net [get_bd_pins core_clk_wiz/clk_out1] [get_bd_pins rst_core/slowest_sync_clk]
connect_bd_net [get_bd_pins core_clk_wiz/locked] [get_bd_pins rst_core/dcm_locked]
connect_bd_net [get_bd_pins ddr4_0/c0_ddr4_ui_clk] [get_bd_pins rst_ddr4/slowest_sync_clk]
connect_bd_net [get_bd_pins ddr4_0/c0_ddr4_ui_clk_sync_rst] [get_bd_pins rst_ddr4/ext_reset_in]
connect_bd_net [get_bd_pins ddr4_0/c0_init_calib_complete] [get_bd_pins rst_ddr4/dcm_locked]
connect_bd_net [get_bd_pins rst_ddr4/peripheral_aresetn] [get_bd_pins ddr4_0/c0_ddr4_aresetn]

# ---- interconnect: DMA and core to DDR4 (three clocks), XDMA's BAR to the core's registers (two)
mmf_cell mem_smc smartconnect [list CONFIG.NUM_SI 2 CONFIG.NUM_MI 1 CONFIG.NUM_CLKS 3]
mmf_cell lite_smc smartconnect [list CONFIG.NUM_SI 1 CONFIG.NUM_MI 1 CONFIG.NUM_CLKS 2]
connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI] [get_bd_intf_pins mem_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins mmf_core/m_axi] [get_bd_intf_pins mem_smc/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins mem_smc/M00_AXI] [get_bd_intf_pins ddr4_0/C0_DDR4_S_AXI]
connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI_LITE] [get_bd_intf_pins lite_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins lite_smc/M00_AXI] [get_bd_intf_pins mmf_core/s_axil]

connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins mem_smc/aclk] [get_bd_pins lite_smc/aclk] \
    [get_bd_pins mmf_core/irq_clk]
connect_bd_net [get_bd_pins core_clk_wiz/clk_out1] [get_bd_pins mem_smc/aclk1] [get_bd_pins lite_smc/aclk1] \
    [get_bd_pins mmf_core/clk]
connect_bd_net [get_bd_pins ddr4_0/c0_ddr4_ui_clk] [get_bd_pins mem_smc/aclk2]
connect_bd_net [get_bd_pins rst_pcie/interconnect_aresetn] [get_bd_pins mem_smc/aresetn] [get_bd_pins lite_smc/aresetn]
connect_bd_net [get_bd_pins rst_core/peripheral_aresetn] [get_bd_pins mmf_core/aresetn]
connect_bd_net [get_bd_pins mmf_core/usr_irq] [get_bd_pins xdma_0/usr_irq_req]

# ---- address map (address_map.tcl: generated from the manifest's register and card memory maps)
assign_bd_address -offset $MMF_DDR_BASE -range $MMF_DDR_RANGE \
    -target_address_space [get_bd_addr_spaces xdma_0/M_AXI] \
    [get_bd_addr_segs ddr4_0/C0_DDR4_MEMORY_MAP/C0_DDR4_ADDRESS_BLOCK]
assign_bd_address -offset $MMF_DDR_BASE -range $MMF_DDR_RANGE \
    -target_address_space [get_bd_addr_spaces mmf_core/m_axi] \
    [get_bd_addr_segs ddr4_0/C0_DDR4_MEMORY_MAP/C0_DDR4_ADDRESS_BLOCK]
assign_bd_address -offset $MMF_REG_BASE -range $MMF_REG_RANGE \
    -target_address_space [get_bd_addr_spaces xdma_0/M_AXI_LITE] \
    [get_bd_addr_segs mmf_core/s_axil/*]
if {$MMF_CARD_END > $MMF_DDR_RANGE} {
    error "mmfree: the model needs $MMF_CARD_END bytes of card memory, more than the $MMF_DDR_RANGE mapped"
}

validate_bd_design
save_bd_design
make_wrapper -files [get_files $MMF(bd).bd] -top -import
set_property top $MMF(bd)_wrapper [current_fileset]

# Build the mmfree core's bitstream for a PCIe card:  vivado -mode batch -source vivado/build.tcl
#
# Project for the board's part and board part -> the core's RTL and its $readmemh tables ->
# the block design (bd.tcl) -> constraints.xdc -> synthesis and implementation -> timing check ->
# write_bitstream, the configuration-flash image, and <bitstream>.json beside it (the sidecar
# `mmfree export --bitstream` reads: design ID, core clock, timing). Environment: MMF_JOBS (parallel
# runs, default 8). Output: vivado/build/ (the project) and vivado/out/ (bitstream, flash image,
# sidecar, reports). NOT RUN in the mmfree project (it has no Vivado): see README.md.

set mmf_here [file dirname [file normalize [info script]]]
set mmf_bundle [file dirname $mmf_here]
source [file join $mmf_here settings.tcl]
source [file join $mmf_here address_map.tcl]

set jobs 8
if {[info exists ::env(MMF_JOBS)]} {
    set jobs $::env(MMF_JOBS)
}
set out [file join $mmf_here out]
file mkdir $out

proc mmf_fail {message} {
    puts "mmfree: ERROR: $message"
    exit 1
}

# ---- project for the board's part and (newest installed) board part
create_project $MMF(project) [file join $mmf_here build] -part $MMF(part) -force
set board_parts [lsort -dictionary [get_board_parts -quiet $MMF(board_part)]]
if {[llength $board_parts] == 0} {
    mmf_fail "no board files for $MMF(board_part) in this Vivado: install them (Tools > Vivado Store > Boards) and run again"
}
set_property board_part [lindex $board_parts end] [current_project]
puts "mmfree: board part [lindex $board_parts end], part $MMF(part), core clock $MMF(core_mhz) MHz"

# ---- sources: the core's RTL, its header, its ROM images, the block-design wrapper
foreach f $MMF(rtl_sources) {
    add_files -norecurse [file join $mmf_bundle $f]
}
foreach f $MMF(rtl_headers) {
    add_files -norecurse [file join $mmf_bundle $f]
    set_property file_type {Verilog Header} [get_files [file join $mmf_bundle $f]]
}
set_property include_dirs [list [file join $mmf_bundle rtl]] [current_fileset]
foreach f $MMF(rtl_tables) {
    # $readmemh names the tables without a directory: project files are found by name
    add_files -norecurse [file join $mmf_bundle $f]
}
add_files -norecurse [file join $mmf_here $MMF(core_module).v]
update_compile_order -fileset sources_1

# ---- block design, constraints
source [file join $mmf_here bd.tcl]
add_files -fileset constrs_1 -norecurse [file join $mmf_here constraints.xdc]

# ---- synthesis and implementation
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {[get_property PROGRESS [get_runs synth_1]] ne "100%"} {
    mmf_fail "synthesis failed: see [get_property DIRECTORY [get_runs synth_1]]/runme.log"
}
launch_runs impl_1 -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    mmf_fail "implementation failed: see [get_property DIRECTORY [get_runs impl_1]]/runme.log"
}
open_run impl_1
report_timing_summary -file [file join $out timing_summary.rpt]
report_utilization -file [file join $out utilization.rpt]
report_clocks -file [file join $out clocks.rpt]

set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
set whs [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -hold]]
set timing_met [expr {$wns >= 0 && $whs >= 0}]

# The sidecar: what `mmfree export --bitstream` checks against the bundle.
set bit [file join $out $MMF(project).bit]
proc mmf_sidecar {path fields} {
    set f [open $path w]
    set items {}
    foreach {k v} $fields {
        lappend items "  \"$k\": $v"
    }
    puts $f "\{\n[join $items ",\n"]\n\}"
    close $f
}
proc mmf_q {s} { return "\"$s\"" }

if {!$timing_met} {
    mmf_sidecar [file join $out timing_failed.json] [list \
        design_id [mmf_q $MMF(design_id)] core_clock_mhz $MMF(core_mhz) wns_ns $wns whs_ns $whs timing_met false]
    mmf_fail "timing not met (setup WNS $wns ns, hold WHS $whs ns) at a core clock of $MMF(core_mhz) MHz: no bitstream written. See README.md, 'When timing fails'."
}

write_bitstream -force $bit
write_cfgmem -force -format mcs -size $MMF(flash_size_mb) -interface $MMF(flash_interface) \
    -loadbit "up 0x00000000 $bit" [file join $out $MMF(project).mcs]

mmf_sidecar $bit.json [list \
    format [mmf_q mmfree-bitstream-sidecar] \
    version 1 \
    design_id [mmf_q $MMF(design_id)] \
    board [mmf_q $MMF(board)] \
    part [mmf_q $MMF(part)] \
    board_part [mmf_q [get_property board_part [current_project]]] \
    core_clock_mhz $MMF(core_mhz) \
    bitstream [mmf_q [file tail $bit]] \
    bytes [file size $bit] \
    vivado [mmf_q [version -short]] \
    wns_ns $wns \
    whs_ns $whs \
    timing_met true \
    built [mmf_q [clock format [clock seconds] -format {%Y-%m-%dT%H:%M:%SZ} -gmt true]]]
puts "mmfree: wrote $bit and $bit.json (design $MMF(design_id), core clock $MMF(core_mhz) MHz, WNS $wns ns)"
puts "mmfree: next: mmfree export <model> --target fpga --board $MMF(board) --bitstream $bit"

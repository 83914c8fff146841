"""The mmfree core's hardware contract, shared by the exporter, `mmfree deploy` and the emulated card.

regmap (register map, card memory map, host protocol), isa (the instruction set), image (the
weight image layout) and machine (the golden model: the ISA executed in numpy).
"""

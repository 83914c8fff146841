"""On-disk formats: one module per artifact, each the reader and the writer of its format.

    manifest  the one manifest every directory format carries: format name, version, every
              file's sha256; one `verify`; readers refuse versions they do not know
    run       a training run / reference checkpoint (config.json + model.safetensors)
    packed    a packed ternary model directory (`mmfree quantize`)
    ternary   `open_ternary`: any run, checkpoint or packed directory as one ternary model
    cuda      `mmfree export --target cuda`        intmodel  `mmfree export --target cpu`
    onnx      `mmfree export --target onnx`        fpga      `mmfree export --target fpga` (bundle)

Engines and `deploy` read artifacts through these modules, never through `export/`.
"""

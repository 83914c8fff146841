"""The BitLinear numerics every path shares, each a named constant defined once, never retyped.

The PyTorch twins (`kernels.bitlinear.naive`), the CPU training Functions, the Triton kernels'
launchers, the frozen inference layer, the ONNX graphs and the integer spec all import these.
Plain Python floats, no torch: the numpy-only integer spec reads them too.
"""

BITLINEAR_NORM_EPS = 1e-6
"""eps of the RMSNorm inside every BitLinear (the fused path the released checkpoints used):
x̂ = x · rsqrt(mean(x²) + eps) · γ."""
ACT_SCALE_FLOOR = 1e-5
"""Lower bound of a token's absmax before the int8 scale 127/absmax is taken."""
WEIGHT_SCALE_FLOOR = 1e-5
"""Lower bound of the per-tensor weight scale β = mean|W|."""

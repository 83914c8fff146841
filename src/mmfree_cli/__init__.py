"""mmfree: a toolchain for MatMul-free (ternary HGRN-Bit) language models."""

__version__ = "0.1.0"

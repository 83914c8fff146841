"""The HGRN-Bit MatMul-free language model: config, layers, model and reference checkpoints."""

from .checkpoint import from_pretrained, save_pretrained
from .config import HGRNBitConfig, preset, presets
from .model import IGNORE_INDEX, CausalLMOutput, HGRNBitForCausalLM

__all__ = ["HGRNBitConfig", "HGRNBitForCausalLM", "CausalLMOutput", "IGNORE_INDEX", "preset",
           "presets", "from_pretrained", "save_pretrained"]

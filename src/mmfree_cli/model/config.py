"""HGRN-Bit model configuration, read and written as the reference `config.json` (model_type hgrn_bit).

Field names and defaults follow the reference `HGRNBitConfig`. Options of that config which the
released checkpoints do not use (short convolutions, several heads, expand ratio ≠ 1) are refused
with a clear error rather than silently ignored. `ternary` is ours: False turns every BitLinear into
a plain full-precision linear (teachers, baselines); it is written to config.json only when False.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

MODEL_TYPE = "hgrn_bit"


@dataclass
class HGRNBitConfig:
    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    attn_mode: str = "fused_recurrent"
    num_heads: int = 1
    expand_ratio: int = 1
    use_short_conv: bool = False
    conv_size: int = 4
    share_conv_kernel: bool = True
    use_lower_bound: bool = True
    hidden_ratio: int = 4
    intermediate_size: int | None = None
    hidden_act: str = "swish"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int = 1
    eos_token_id: int = 2
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    fuse_cross_entropy: bool = True
    ternary: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    """Fields of a reference config.json we do not use (e.g. transformers_version), kept to round-trip."""

    def __post_init__(self) -> None:
        if self.intermediate_size is None:
            # reference: int(d·ratio·2/3) rounded up to a multiple of 256 → 2816 / 5632 / 6912
            inner = int(self.hidden_size * self.hidden_ratio * 2 / 3)
            self.intermediate_size = 256 * ((inner + 255) // 256)
        problems = []
        if self.use_short_conv:
            problems.append("use_short_conv=true is not supported (the released checkpoints do not use it)")
        if self.num_heads != 1 or self.expand_ratio != 1:
            problems.append("only num_heads=1 and expand_ratio=1 are supported (as in the released checkpoints)")
        if self.hidden_act not in ("swish", "silu"):
            problems.append(f"hidden_act={self.hidden_act!r} is not supported (use swish)")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise UserError("model config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HGRNBitConfig:
        d = dict(d)
        model_type = d.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise UserError(f"model_type is {model_type!r}, expected {MODEL_TYPE!r} (an MMfreeLM / HGRN-Bit checkpoint)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except TypeError as e:
            raise UserError(f"model config: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = {"model_type": MODEL_TYPE, "architectures": ["HGRNBitForCausalLM"]}
        d.update(self.extra)
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        if d["ternary"]:
            del d["ternary"]
        return d

    @classmethod
    def load(cls, path: str | Path) -> HGRNBitConfig:
        from ..fileio import read_json
        path = Path(path)
        return cls.from_dict(read_json(path / "config.json" if path.is_dir() else path))

    def save(self, path: str | Path) -> None:
        from ..fileio import write_json
        path = Path(path)
        write_json(path / "config.json" if path.is_dir() else path, self.to_dict())


def presets() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((Path(__file__).parent / "presets.yaml").read_text())


def preset(name: str, **overrides: Any) -> HGRNBitConfig:
    """A named shape (tiny, 370m, 1.3b, 2.7b) with optional field overrides."""
    table = presets()
    if name not in table:
        raise UserError(f"unknown model preset {name!r} — choose one of {', '.join(table)}")
    return HGRNBitConfig.from_dict({**table[name], **overrides})

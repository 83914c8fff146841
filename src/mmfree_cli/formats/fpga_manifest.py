"""The parts of an FPGA bundle's manifest.json that deploy and the fpga engine read, checked
before use: types, sizes and every file path confined to the bundle. A manifest missing a key or
holding a wrong type is one line naming the key (never a KeyError from deep inside deploy), and
`weights.file = "../../etc/hostname"` is refused before anything is read or DMA-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError
from ..fileio import inside

U64 = 2 ** 64


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Block(_Open):
    name: str
    offset: int = Field(ge=0, lt=U64)
    bytes: int = Field(ge=0, lt=U64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Weights(_Open):
    file: str
    bytes: int = Field(ge=1, lt=1 << 40)
    blocks: list[Block]


class Golden(_Open):
    path: str


class Dims(_Open):
    d: int = Field(ge=1, le=1 << 16)
    vocab: int = Field(ge=1, le=1 << 22)
    layers: int = Field(ge=1, le=1 << 10)


class ModelPart(_Open):
    config: dict[str, Any]
    dims: Dims


class Region(_Open):
    offset: int = Field(ge=0, lt=U64)


class Artifact(_Open):
    path: str
    kind: str | None = None


class Manifest(_Open):
    target: str
    design_id: str = Field(pattern=r"^(0x)?[0-9a-fA-F]{1,8}$")
    weights: Weights
    golden: Golden
    model: ModelPart
    card_memory_map: dict[str, Region]
    registers_to_write: dict[str, int]
    artifacts: list[Artifact] = []


def check_manifest(bundle: Path, raw: Any) -> dict:
    """The manifest as read, once it is known to be usable; UserError naming the first problem."""
    if not isinstance(raw, dict):
        raise UserError(f"{bundle}/manifest.json: not a JSON object — re-export the bundle")
    if raw.get("target") != "fpga":
        raise UserError(f"{bundle}: a {str(raw.get('target'))[:40]!r} export, not an fpga bundle — "
                        "run `mmfree export --target fpga`")
    try:
        man = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{bundle}/manifest.json: {where[:80]}: {first['msg'][:120]} — the bundle is damaged; "
                        "re-export it (`mmfree export --target fpga`)") from None
    for key in ("state", "in", "out", "end"):
        if key not in man.card_memory_map:
            raise UserError(f"{bundle}/manifest.json: card_memory_map.{key} is missing — re-export the bundle")
    for key, value in man.registers_to_write.items():
        if not 0 <= value < U64:
            raise UserError(f"{bundle}/manifest.json: registers_to_write.{key[:40]} is out of range — re-export the bundle")
    inside(bundle, man.weights.file, "weights.file")
    inside(bundle, man.golden.path, "golden.path")
    for i, artifact in enumerate(man.artifacts):
        inside(bundle, artifact.path, f"artifacts[{i}].path")
    return raw

"""Distillation teachers: load one from disk, frozen, and check that it speaks the student's tokenizer.

A teacher is either a local Hugging Face `transformers` causal-LM directory (loaded with
`AutoModelForCausalLM`, offline; transformers is the optional `mmfree-cli[transformers]` extra)
or an mmfree run / model directory with `ternary: false`. Both are wrapped in `Teacher`, which
answers `logits_and_hidden(input_ids)` in eval mode under `no_grad`, in the dtype and on the
device the recipe asks for.

Vocabularies must match id for id, or the KL term compares unrelated tokens. When the teacher
directory holds a tokenizer it is compared with the student's, token by token; when it holds none,
the teacher's logit width must equal the student tokenizer's vocabulary size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import read_json

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Teacher:
    """A frozen causal LM: `logits_and_hidden(ids [B, T]) -> (logits [B, T, V], last hidden [B, T, d] | None)`."""

    def __init__(self, module: torch.nn.Module, kind: str, path: Path, vocab_size: int, hidden_size: int,
                 device: torch.device, fingerprint: str):
        self.module, self.kind, self.path = module, kind, path
        self.vocab_size, self.hidden_size, self.device = vocab_size, hidden_size, device
        self.fingerprint = fingerprint
        module.eval().requires_grad_(False)

    @torch.no_grad()
    def logits_and_hidden(self, input_ids: torch.Tensor, want_hidden: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = input_ids.to(self.device)
        if self.kind == "mmfree":
            hidden, _ = self.module.model(ids)  # the final-norm output that feeds lm_head
            return self.module.lm_head(hidden), (hidden if want_hidden else None)
        out = self.module(input_ids=ids, output_hidden_states=want_hidden, use_cache=False)
        # transformers' last hidden state is taken after the final norm, as ours is
        return out.logits, (out.hidden_states[-1] if want_hidden else None)


def is_mmfree_dir(path: Path) -> bool:
    return read_json(path / "config.json").get("model_type") == "hgrn_bit"


def load_teacher(path: str | Path, dtype: str = "float32", device: str | torch.device = "cpu") -> Teacher:
    """The teacher in directory `path`, frozen, in eval mode, in `dtype` on `device`."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"distill.teacher: {path} is not a model directory (no config.json) — give a transformers "
                        "causal-LM directory or an mmfree run trained with model.ternary: false")
    device = torch.device(device)
    if is_mmfree_dir(path):
        return _load_mmfree(path, DTYPES[dtype], device)
    return _load_transformers(path, DTYPES[dtype], device)


def _load_mmfree(path: Path, dtype: torch.dtype, device: torch.device) -> Teacher:
    from ..model import from_pretrained
    model = from_pretrained(path, dtype=dtype, device=device)
    if model.config.ternary:
        raise UserError(f"distill.teacher: {path} is a ternary model — distil from a full-precision one "
                        "(train it with model.ternary=false, or leave distill.teacher null to have one trained)")
    c = model.config
    return Teacher(model, "mmfree", path, c.vocab_size, c.hidden_size, device, fingerprint(path, dtype))


def _load_transformers(path: Path, dtype: torch.dtype, device: torch.device) -> Teacher:
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserError("distill.teacher: loading a transformers model needs the transformers package — "
                        "pip install 'mmfree-cli[transformers]'") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"distill.teacher: {path} does not load as a transformers causal LM ({first}) — "
                        "give a directory written by save_pretrained") from None
    model = model.to(device=device, dtype=dtype)
    c = model.config
    vocab = model.get_output_embeddings().weight.shape[0]
    return Teacher(model, "transformers", path, vocab, c.hidden_size, device, fingerprint(path, dtype))


def fingerprint(path: Path, dtype: torch.dtype) -> str:
    """Names this teacher's logits in the on-disk cache: its config and weight files (name, size, mtime)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json")))
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([str(path.resolve()), str(dtype), (path / "config.json").read_text(), stats])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_vocabulary(teacher_dir: str | Path, tokenizer) -> None:
    """UserError unless the teacher uses the student's tokenizer (id for id)."""
    from ..data.tokenizer import ByteTokenizer, load_tokenizer
    teacher_dir = Path(teacher_dir)
    try:
        theirs = load_tokenizer(teacher_dir)
    except UserError:  # no tokenizer files: the logit width is all we can compare
        config = read_json(teacher_dir / "config.json")
        width = config.get("vocab_size")
        if width != tokenizer.vocab_size:
            raise UserError(f"distill.teacher: {teacher_dir} has no tokenizer and {width} output tokens, the student's "
                            f"tokenizer has {tokenizer.vocab_size} — the vocabularies differ; copy the teacher's "
                            "tokenizer.json there and set tokenizer.name to the teacher directory") from None
        return
    if isinstance(theirs, ByteTokenizer) and isinstance(tokenizer, ByteTokenizer):
        return
    mine_vocab, their_vocab = _vocab(tokenizer), _vocab(theirs)
    if mine_vocab == their_vocab:
        return
    differ = sorted(set(their_vocab.items()) ^ set(mine_vocab.items()), key=lambda kv: kv[1])[:3]
    raise UserError(f"distill.teacher: the teacher's tokenizer ({len(their_vocab)} tokens) differs from the student's "
                    f"({len(mine_vocab)} tokens; e.g. {', '.join(f'{t!r}={i}' for t, i in differ)}) — "
                    "set tokenizer.name to the teacher directory so the student uses the teacher's tokenizer")


def _vocab(tokenizer) -> dict[str, int]:
    from ..data.tokenizer import ByteTokenizer
    if isinstance(tokenizer, ByteTokenizer):
        return {f"<byte {i}>": i for i in range(256)} | {s: 256 + k for k, s in enumerate(tokenizer.specials)}
    return tokenizer._tok.get_vocab(with_added_tokens=True)

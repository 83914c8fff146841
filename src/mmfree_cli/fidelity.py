"""How far the integer-only model drifts from the float model: `mmfree eval --compare`.

Both run the same held-out text in windows of `context` tokens from a zero state: the float model
(the fake-quant W1.58A8 model as trained, float32, via the torch modules) and the integer engine.
Reported: perplexity of each, their relative difference, and top-1 agreement (the share of
positions where both pick the same next token).

Held-out text defaults to the last 10% of the embedded Tiny Shakespeare corpus, the part the tiny
recipe's data split keeps for validation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

HELD_OUT_FRACTION = 0.1


def held_out_text(path: str | Path | None = None) -> str:
    """The text to evaluate on: a UTF-8 file, or the tail of the embedded corpus."""
    if path is None:
        from .resources import embedded_corpus
        text = embedded_corpus().read_text(encoding="utf-8")
        return text[int(len(text) * (1 - HELD_OUT_FRACTION)):]
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found — give a UTF-8 text file with --data")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text — give a plain text file with --data") from None


def _windows(ids: list[int], context: int, max_tokens: int) -> np.ndarray:
    n = min(len(ids), max_tokens + 1) // context
    if n == 0:
        raise UserError(f"held-out text has {len(ids)} tokens, fewer than one window of {context} — "
                        "give more text or a smaller --context")
    return np.asarray(ids[: n * context], dtype=np.int64).reshape(n, context)


def compare(model_dir: str | Path, engine: str = "cpu", data: str | Path | None = None,
            context: int = 128, max_tokens: int = 4096, batch: int = 8) -> dict[str, Any]:
    """Float model vs `engine` on held-out text → perplexities, their delta and top-1 agreement."""
    from .data.tokenizer import load_tokenizer
    from .engines import load_engine
    from .formats.ternary import open_model as load_model
    from .model import HGRNBitConfig
    model_dir = Path(model_dir)
    if context < 2:
        raise UserError(f"--context must be at least 2, got {context}")
    config = HGRNBitConfig.load(model_dir)
    tokenizer = load_tokenizer(model_dir, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
    windows = _windows(tokenizer.encode(held_out_text(data)), context, max_tokens)
    float_model = load_model(model_dir, dtype=torch.float32).eval()
    other = load_engine(engine, model_dir)
    nll_f = nll_o = agree = count = 0.0
    for start in range(0, len(windows), batch):
        tokens = torch.from_numpy(windows[start:start + batch])
        with torch.no_grad():
            lf = float_model(tokens).logits.float()
        lo, _ = other.prefill(tokens, other.new_state(tokens.shape[0]))
        target = tokens[:, 1:].reshape(-1)
        lf, lo = lf[:, :-1].reshape(-1, lf.shape[-1]), lo[:, :-1].reshape(-1, lo.shape[-1]).float()
        nll_f += F.cross_entropy(lf, target, reduction="sum").item()
        nll_o += F.cross_entropy(lo, target, reduction="sum").item()
        agree += (lf.argmax(-1) == lo.argmax(-1)).sum().item()
        count += target.numel()
    ppl_f, ppl_o = math.exp(nll_f / count), math.exp(nll_o / count)
    return {"model": str(model_dir), "engine": engine, "tokens": int(count), "context": context,
            "ppl_float": ppl_f, "ppl_engine": ppl_o, "ppl_delta": ppl_o / ppl_f - 1,
            "top1_agreement": agree / count}

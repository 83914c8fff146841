"""Tokenise a corpus, pack it into fixed-length blocks and hand each process its batches.

Packing concatenates documents (text-file lines keep their "\n"; JSON / parquet / Hub records are
separated by the tokenizer's EOS) and cuts the stream into blocks of `seq_len` tokens, ignoring
document boundaries, as GPT-style pre-training does.

The order of training blocks is a pure function of (seed, micro-batch index, rank): resuming at
step s reproduces exactly the batches an uninterrupted run would have seen, with no sampler state
to save, and the processes of a multi-process run see disjoint blocks of each global batch.
Streamed corpora are read in order from each process's shard; resuming skips what was consumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from . import sources


@dataclass
class ValidationSet:
    blocks: torch.Tensor          # [N, seq_len] int64
    bytes_per_token: float        # UTF-8 bytes the text of these blocks takes, per token (for bits per byte)


def _token_stream(records: Iterator[dict], column: str, tokenizer, line_format: bool,
                  limit: int | None = None) -> Iterator[list[int]]:
    """Token ids of each record, with "\n" restored (lines) or EOS appended (documents)."""
    count = 0
    for record in records:
        text = record[column]
        if text is None:
            continue
        ids = tokenizer.encode(text + "\n") if line_format else tokenizer.encode(text) + [tokenizer.eos_id]
        yield ids
        count += len(ids)
        if limit is not None and count >= limit:
            return


def _tokens(records, column, tokenizer, line_format, limit=None) -> np.ndarray:
    chunks = [np.asarray(ids, dtype=np.int64) for ids in _token_stream(iter(records), column, tokenizer, line_format, limit)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def to_blocks(tokens: np.ndarray, seq_len: int) -> torch.Tensor:
    n = len(tokens) // seq_len
    return torch.from_numpy(tokens[: n * seq_len].reshape(n, seq_len).copy())


def _bytes_per_token(blocks: torch.Tensor, tokenizer) -> float:
    if blocks.numel() == 0:
        return 1.0
    text_bytes = sum(len(tokenizer.decode(row.tolist()).encode("utf-8")) for row in blocks)
    return max(text_bytes, 1) / blocks.numel()


class BlockSource:
    """The packed training blocks of a corpus that fits in memory, shuffled per epoch."""

    def __init__(self, blocks: torch.Tensor, seed: int):
        if len(blocks) == 0:
            raise UserError("data: the training text is shorter than one block — use more text or a smaller data.seq_len")
        self.blocks, self.seed = blocks, seed
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.blocks), generator=g), epoch
        return self._perm

    def batch(self, micro_index: int, micro_batch: int, rank: int, world_size: int) -> torch.Tensor:
        """The blocks of global micro-batch `micro_index` that belong to `rank`: [micro_batch, seq_len]."""
        n = len(self.blocks)
        start = micro_index * micro_batch * world_size + rank * micro_batch
        rows = []
        for p in range(start, start + micro_batch):
            rows.append(self._permutation(p // n)[p % n])
        return self.blocks[torch.stack(rows)]

    def epochs(self, micro_batches: int, micro_batch: int, world_size: int) -> float:
        return micro_batches * micro_batch * world_size / len(self.blocks)


class StreamSource:
    """Blocks read in order from a streamed (iterable) dataset shard; `batch` must be called in order."""

    def __init__(self, records, column: str, tokenizer, line_format: bool, seq_len: int):
        self._records, self._column, self._tok, self._lines = records, column, tokenizer, line_format
        self.seq_len = seq_len
        self._iter, self._buffer, self._next = None, [], 0

    def _blocks(self) -> Iterator[torch.Tensor]:
        buffer: list[int] = []
        epoch = 0
        while True:
            empty = True
            for ids in _token_stream(iter(self._records), self._column, self._tok, self._lines):
                empty = False
                buffer.extend(ids)
                while len(buffer) >= self.seq_len:
                    yield torch.tensor(buffer[: self.seq_len], dtype=torch.int64)
                    del buffer[: self.seq_len]
            if empty:
                raise UserError("data: the streamed dataset shard is empty — check data.source and data.split")
            epoch += 1
            if hasattr(self._records, "set_epoch"):
                self._records.set_epoch(epoch)

    def batch(self, micro_index: int, micro_batch: int, rank: int, world_size: int) -> torch.Tensor:
        if self._iter is None:
            self._iter = self._blocks()
        while self._next < micro_index:  # resume: skip what earlier steps consumed
            for _ in range(micro_batch):
                next(self._iter)
            self._next += 1
        self._next += 1
        return torch.stack([next(self._iter) for _ in range(micro_batch)])

    def epochs(self, micro_batches: int, micro_batch: int, world_size: int) -> float:
        return math.nan


def build(data, tokenizer, seed: int, rank: int = 0, world_size: int = 1) -> tuple[BlockSource | StreamSource, ValidationSet]:
    """Training source and validation set for the recipe's `data` section."""
    line_format = sources.is_line_format(data)
    column = sources.text_column(data, line_format)
    val_tokens = data.validation_blocks * data.seq_len
    train_ds = sources.load_split(data, data.split, rank, world_size)
    _check_column(train_ds, column)
    if data.streaming:
        if data.validation_split:
            val = _tokens(sources.load_split(data, data.validation_split), column, tokenizer, line_format, val_tokens)
        else:  # the first records of the (unsplit) stream are held out; training skips them
            whole = sources.load_split(data, data.split)
            held = list(whole.take(_records_for(whole, column, tokenizer, line_format, val_tokens)))
            val = _tokens(held, column, tokenizer, line_format)
            train_ds = train_ds.skip(len(held))
        train: BlockSource | StreamSource = StreamSource(train_ds, column, tokenizer, line_format, data.seq_len)
    else:
        tokens = _tokens(train_ds, column, tokenizer, line_format)
        if data.validation_split:
            val = _tokens(sources.load_split(data, data.validation_split), column, tokenizer, line_format, val_tokens)
        else:  # hold out the tail of the text: validation is text the model never trained on
            cut = int(len(tokens) * (1 - data.validation_fraction))
            tokens, val = tokens[:cut], tokens[cut:]
        train = BlockSource(to_blocks(tokens, data.seq_len), seed)
    val_blocks = to_blocks(val, data.seq_len)[: data.validation_blocks]
    if len(val_blocks) == 0:
        raise UserError("data: the validation text is shorter than one block — raise data.validation_fraction "
                        "or lower data.seq_len")
    return train, ValidationSet(val_blocks, _bytes_per_token(val_blocks, tokenizer))


def _records_for(ds, column, tokenizer, line_format, tokens_wanted: int) -> int:
    count, n = 0, 0
    for ids in _token_stream(iter(ds), column, tokenizer, line_format):
        count += len(ids)
        n += 1
        if count >= tokens_wanted:
            break
    return n


def _check_column(ds, column: str) -> None:
    names = getattr(ds, "column_names", None)
    if names is not None and column not in names:
        raise UserError(f"data.text_field: the dataset has no column {column!r} (it has {', '.join(names)}) — set data.text_field")

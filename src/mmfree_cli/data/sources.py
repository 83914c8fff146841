"""Where training text comes from: the embedded corpus, local text / JSONL / parquet files, or the Hub.

Everything is loaded through Hugging Face `datasets`, so local files and Hub datasets share one
path (and one cache). Large corpora stream (`data.streaming: true`); a streamed dataset is split by
node across processes (`datasets.distributed.split_dataset_by_node`). The Hub being unreachable
(offline, or `HF_HUB_OFFLINE=1`) is reported as one clear error rather than a traceback.
"""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import UserError
from ..resources import embedded_corpus

SUFFIX_FORMATS = {".txt": "text", ".text": "text", ".md": "text", ".json": "json", ".jsonl": "json",
                  ".parquet": "parquet"}


def is_local_spec(source: str) -> bool:
    """True for paths and globs; False for "embedded" and Hub names like "cerebras/SlimPajama-627B"."""
    if source == "embedded":
        return False
    if source.startswith((".", "/", "~")) or any(ch in source for ch in "*?["):
        return True
    return Path(source).suffix in SUFFIX_FORMATS or Path(source).exists() or source.count("/") > 1


def local_files(spec: str) -> list[str]:
    """The files a local source names: one file, every data file of a directory, or a glob."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix in SUFFIX_FORMATS and p.is_file())
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(glob.glob(str(path), recursive=True))
    if not files:
        raise UserError(f"data.source: no data files in {spec} — give .txt, .jsonl or .parquet files")
    return files


def file_format(files: list[str], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    kinds = {SUFFIX_FORMATS.get(Path(f).suffix) for f in files}
    if len(kinds) != 1 or None in kinds:
        raise UserError(f"data.source: cannot tell the format of {files[0]} (and {len(files) - 1} more) — "
                        "set data.format to text, json or parquet")
    return kinds.pop()


def load_split(data, split: str, rank: int = 0, world_size: int = 1):
    """One split of the recipe's `data` section as a `datasets` Dataset (or IterableDataset when
    streaming) with the text in a column named by `text_column(data)`."""
    import datasets
    datasets.disable_progress_bars()
    source = str(embedded_corpus()) if data.source == "embedded" else data.source
    if data.source == "embedded" or is_local_spec(data.source):
        files = local_files(source)
        fmt = file_format(files, data.format)
        # text files keep line breaks: one record per line, "\n" added back when tokenising
        ds = datasets.load_dataset(fmt, data_files={"train": files}, split="train", streaming=data.streaming)
    else:
        ds = _load_hub(data, split)
    if data.streaming and world_size > 1:
        from datasets.distributed import split_dataset_by_node
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size)
    return ds


def _load_hub(data, split: str):
    import datasets
    try:
        return datasets.load_dataset(data.source, data.hub_config, split=split, streaming=data.streaming)
    except (ConnectionError, OSError) as e:
        raise UserError(f"data.source: cannot reach the Hugging Face Hub for {data.source!r} ({type(e).__name__}) — "
                        "connect to the network (and unset HF_HUB_OFFLINE), or point data.source at local files") from None
    except Exception as e:  # datasets raises several unrelated types for "not found" / "offline"
        name = type(e).__name__
        if "NotFound" in name or "Offline" in name or "Connection" in name or "Hub" in name:
            raise UserError(f"data.source: Hub dataset {data.source!r} is not available ({name}: "
                            f"{str(e).splitlines()[0][:160]}) — check the name and the network, or use local files") from None
        raise


def text_column(data, is_text_format: bool) -> str:
    return "text" if is_text_format else data.text_field


def is_line_format(data) -> bool:
    """True when records are lines of text files (their "\n" must be put back)."""
    if data.source == "embedded":
        return True
    if not is_local_spec(data.source):
        return False
    return file_format(local_files(data.source), data.format) == "text"

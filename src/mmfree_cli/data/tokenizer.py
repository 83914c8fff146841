"""Tokenizers: a byte-level one for the embedded default, and any local HF `tokenizer.json`.

Both answer the same small interface (`encode`, `decode`, `vocab_size`, `bos_id`, `eos_id`,
`save`), and `load_tokenizer(dir)` finds whichever a model or run directory holds:
`tokenizer.json` (HF tokenizers: Llama/Mistral SentencePiece-style included) or
`mmfree_tokenizer.json` ({"type": "bytes"}: 256 byte ids, then <bos> <eos> <pad> <sep>).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import read_json, write_json

BYTE_TOKENIZER_FILE = "mmfree_tokenizer.json"
HF_TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FILES = (BYTE_TOKENIZER_FILE, HF_TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "chat_template.jinja", "generation_config.json")
"""Every file of a model directory that belongs to its tokenizer or chat template (copied by exports)."""


class ByteTokenizer:
    """UTF-8 bytes are ids 0..255; specials follow. Never fails on any text."""

    specials = ("<bos>", "<eos>", "<pad>", "<sep>")

    def __init__(self) -> None:
        self.bos_id, self.eos_id, self.pad_id, self.sep_id = 256, 257, 258, 259
        self.vocab_size = 256 + len(self.specials)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_id] + ids if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (specials give b''), for streaming UTF-8 decoding."""
        return bytes([token_id]) if token_id < 256 else b""

    def save(self, directory: str | Path) -> None:
        write_json(Path(directory) / BYTE_TOKENIZER_FILE, {"type": "bytes", "specials": list(self.specials)})


class HFTokenizer:
    """A `tokenizers` tokenizer.json; bos/eos ids from the file's specials or the model config."""

    def __init__(self, path: str | Path, bos_id: int | None = None, eos_id: int | None = None):
        from tokenizers import Tokenizer
        self.path = Path(path)
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise UserError(f"{self.path}: not a valid tokenizer.json ({e})") from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id = bos_id if bos_id is not None else self._special("<s>", "<|begin_of_text|>", "<bos>")
        self.eos_id = eos_id if eos_id is not None else self._special("</s>", "<|end_of_text|>", "<eos>")
        self.pad_id = None

    def _special(self, *names: str) -> int | None:
        for name in names:
            i = self._tok.token_to_id(name)
            if i is not None:
                return i
        return None

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_bos and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token: SentencePiece byte-fallback tokens (<0xE2>) give their byte."""
        piece = self._tok.id_to_token(token_id) or ""
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return bytes([int(piece[3:5], 16)])
        if token_id in (self.bos_id, self.eos_id):
            return b""
        return piece.replace("\u2581", " ").encode("utf-8")

    def save(self, directory: str | Path) -> None:
        from ..fileio import write_text
        write_text(Path(directory) / HF_TOKENIZER_FILE, self._tok.to_str())


Tokenizer = ByteTokenizer | HFTokenizer


def load_tokenizer(directory: str | Path, bos_id: int | None = None, eos_id: int | None = None) -> Tokenizer:
    """The tokenizer saved in a model/run directory (or a tokenizer.json path itself)."""
    path = Path(directory)
    if path.is_file() and path.suffix == ".json":
        return HFTokenizer(path, bos_id, eos_id)
    if (path / BYTE_TOKENIZER_FILE).is_file():
        spec = read_json(path / BYTE_TOKENIZER_FILE)
        if spec.get("type") != "bytes":
            raise UserError(f"{path / BYTE_TOKENIZER_FILE}: unknown tokenizer type {spec.get('type')!r}")
        return ByteTokenizer()
    if (path / HF_TOKENIZER_FILE).is_file():
        return HFTokenizer(path / HF_TOKENIZER_FILE, bos_id, eos_id)
    raise UserError(f"{path}: no {HF_TOKENIZER_FILE} or {BYTE_TOKENIZER_FILE} — copy the model's tokenizer there")


def tokenizer_for_recipe(name: str, resolve=Path) -> Tokenizer:
    """The tokenizer a recipe names: "bytes", a tokenizer.json or model directory, or a Hub repo id
    whose tokenizer.json is fetched (one clear error when the Hub cannot be reached)."""
    if name == "bytes":
        return ByteTokenizer()
    local = resolve(name)
    if local.exists():
        return load_tokenizer(local)
    from huggingface_hub import hf_hub_download

    from ..hub import quiet_hub_logs
    try:
        with quiet_hub_logs():  # its retry warnings would precede our one line
            return HFTokenizer(hf_hub_download(name, HF_TOKENIZER_FILE))
    except Exception as e:  # offline, unknown repo, no tokenizer.json: all end the same way for a user
        raise UserError(f"tokenizer.name: cannot get {HF_TOKENIZER_FILE} of {name!r} from the Hugging Face Hub "
                        f"({type(e).__name__}) — check the name and the network, or give a local tokenizer.json") from None


def copy_tokenizer_files(src: str | Path, dst: str | Path, required: bool = False) -> list[str]:
    """Copy the tokenizer files of model directory `src` into `dst` (atomically); returns their names.

    With `required`, a directory without tokenizer.json or mmfree_tokenizer.json is an error."""
    from ..fileio import write_bytes
    src, dst = Path(src), Path(dst)
    found = [name for name in TOKENIZER_FILES if (src / name).is_file()]
    if required and not {BYTE_TOKENIZER_FILE, HF_TOKENIZER_FILE} & set(found):
        raise UserError(f"{src}: no {HF_TOKENIZER_FILE} or {BYTE_TOKENIZER_FILE} — copy the model's tokenizer "
                        "there, then export again")
    for name in found:
        write_bytes(dst / name, (src / name).read_bytes())
    return found

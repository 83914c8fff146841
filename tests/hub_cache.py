"""A Hugging Face Hub cache laid out on disk, in the layout of the released MMfreeLM repos, so Hub
ids are tested with no network.

The cache layout is huggingface_hub's: `models--ORG--NAME/blobs/<sha256>` holds file contents,
`snapshots/<commit>/<file>` are relative symlinks into blobs, `refs/<branch>` holds a commit.
A repo here is what `ridger/MMfreeLM-*` ships: config.json (model_type hgrn_bit, the reference
fields), generation_config.json, weights as one model.safetensors or as shards with
model.safetensors.index.json (bf16, no mmfree checksum), and Llama-style tokenizer files
(tokenizer.json with <unk>/<s>/</s> as ids 0/1/2, SentencePiece "▁" pieces and byte fallback;
tokenizer_config.json; special_tokens_map.json; tokenizer.model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "hello there, how are you today?",
          "once upon a time there was a small model", "ternary weights are minus one, zero or one"]


def llama_style_tokenizer_json() -> str:
    """A small SentencePiece-style BPE (▁ for spaces, <0xNN> byte fallback), Llama's special ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok.to_str()


def reference_config(vocab: int, hidden: int = 32, layers: int = 2) -> dict:
    """config.json as the released repos write it (reference HGRNBitConfig fields)."""
    return {"architectures": ["HGRNBitForCausalLM"], "attn_mode": "fused_recurrent", "bos_token_id": 1,
            "conv_size": 4, "eos_token_id": 2, "expand_ratio": 1, "fuse_cross_entropy": True,
            "hidden_act": "swish", "hidden_ratio": 4, "hidden_size": hidden, "initializer_range": 0.02,
            "intermediate_size": 2 * hidden, "max_position_embeddings": 2048, "model_type": "hgrn_bit",
            "num_heads": 1, "num_hidden_layers": layers, "rms_norm_eps": 1e-06, "share_conv_kernel": True,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
            "use_cache": True, "use_lower_bound": True, "use_short_conv": False, "vocab_size": vocab}


def repo_files(seed: int, sharded: bool) -> dict[str, bytes]:
    """The files of one released-style repo revision (weights random, from `seed`)."""
    tokenizer = llama_style_tokenizer_json()
    vocab = json.loads(tokenizer)["model"]["vocab"]
    config = reference_config(len(vocab))
    torch.manual_seed(seed)
    model = HGRNBitForCausalLM(HGRNBitConfig.from_dict(config))
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    files = {"config.json": json.dumps(config, indent=2).encode(),
             "generation_config.json": b'{"bos_token_id": 1, "eos_token_id": 2}',
             "tokenizer.json": tokenizer.encode(),
             "tokenizer.model": b"\x0a\x00not-a-real-sentencepiece-model",  # shipped, unused by mmfree
             "tokenizer_config.json": json.dumps({"add_bos_token": True, "add_eos_token": False,
                                                  "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                                  "tokenizer_class": "LlamaTokenizer"}).encode(),
             "special_tokens_map.json": b'{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}',
             "README.md": b"# a test repo\n"}
    names = sorted(tensors)
    parts = [names[: len(names) // 2], names[len(names) // 2:]] if sharded else [names]
    weight_map = {}
    for i, part in enumerate(parts):
        name = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors" if sharded else "model.safetensors"
        tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f".hubcache-{os.getpid()}-{seed}-{i}.safetensors"
        save_file({k: tensors[k] for k in part}, str(tmp), metadata={"format": "pt"})
        files[name] = tmp.read_bytes()
        tmp.unlink()
        weight_map.update({k: name for k in part})
    if sharded:
        files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": 0},
                                                            "weight_map": weight_map}).encode()
    return files


def add_revision(cache: Path, repo: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> Path:
    """Lay one commit of `repo` into the Hub cache `cache`; point each ref (branch/tag) at it."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (root / "blobs" / blob).write_bytes(data)
        link = snapshot / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / ".." / "blobs" / blob)
    for ref in refs:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snapshot

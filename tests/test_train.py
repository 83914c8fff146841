"""The trainer: schedules, data order, gradient accumulation, a whole run through the CLI, exact
resume after SIGKILL, two processes under `accelerate launch`, and the offline-Hub error."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmfree_cli.data.blocks import BlockSource, build
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.fileio import load_safetensors, tensors_digest
from mmfree_cli.model import from_pretrained
from mmfree_cli.recipe import DataSection, ScheduleSection, recipe_from_dict
from mmfree_cli.resources import embedded_corpus
from mmfree_cli.train.schedules import lr_at, weight_decay_at
from tests.helpers import mmfree

SMALL_MODEL = {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64}


def write_recipe(tmp_path: Path, **sections) -> Path:
    """A recipe for a very small model on the first 60 kB of the embedded corpus."""
    corpus = tmp_path / "small.txt"
    if not corpus.exists():
        corpus.write_bytes(embedded_corpus().read_bytes()[:60_000])
    recipe = {"model": dict(SMALL_MODEL),
              "data": {"source": "small.txt", "seq_len": 32, "validation_blocks": 4},
              "train": {"max_steps": 6, "micro_batch_size": 4, "sample_prompt": "", "threads": 1},
              "schedule": {"warmup_steps": 2},
              "checkpoint": {"every_steps": 3}, "eval": {"every_steps": 3}, "logging": {"every_steps": 1}}
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path



def test_schedule_warmup_decay_and_cut():
    s = ScheduleSection(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 1.0, 100, s) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, s) == pytest.approx(1.0)
    assert lr_at(99, 1.0, 100, s) == pytest.approx(0.1)
    assert lr_at(30, 1.0, 100, s) > lr_at(60, 1.0, 100, s)
    cut = ScheduleSection(kind="constant", warmup_steps=0, cut_at=0.5, cut_factor=0.25, weight_decay_after_cut=0.0)
    assert lr_at(49, 1.0, 100, cut) == 1.0 and lr_at(50, 1.0, 100, cut) == 0.25
    assert weight_decay_at(49, 0.1, 100, cut) == 0.1 and weight_decay_at(50, 0.1, 100, cut) == 0.0


def test_block_order_is_a_function_of_step_and_rank():
    blocks = torch.arange(40 * 4).reshape(40, 4)
    a, b = BlockSource(blocks, seed=3), BlockSource(blocks, seed=3)
    later = a.batch(7, 4, 0, 1)  # asked out of order, and from a fresh source: the same batch
    for k in range(7):
        b.batch(k, 4, 0, 1)
    assert torch.equal(later, b.batch(7, 4, 0, 1))
    r0, r1 = a.batch(2, 4, 0, 2), a.batch(2, 4, 1, 2)
    rows = set(r0[:, 0].tolist()) | set(r1[:, 0].tolist())
    assert len(rows) == 8  # the two ranks' halves of a global batch are disjoint
    epoch = torch.cat([a.batch(k, 4, 0, 1) for k in range(10)])
    assert sorted(epoch[:, 0].tolist()) == blocks[:, 0].tolist()  # one epoch visits every block once


def test_text_and_jsonl_sources(tmp_path):
    tok = ByteTokenizer()
    (tmp_path / "a.txt").write_text("line one\nline two\n" * 200)
    data = DataSection(source=str(tmp_path / "a.txt"), seq_len=16, validation_blocks=2)
    train, val = build(data, tok, seed=0)
    text = bytes(train.blocks.flatten().tolist()).decode()
    assert "line one\nline two\n" in text  # line breaks survive
    assert val.blocks.shape == (2, 16) and val.bytes_per_token == pytest.approx(1.0)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"body": f"document {i}"}) for i in range(300)))
    data = DataSection(source=str(tmp_path / "d.jsonl"), text_field="body", seq_len=16, validation_blocks=2)
    train, _ = build(data, tok, seed=0)
    assert (train.blocks == tok.eos_id).any()  # documents are separated by EOS


def test_streamed_source_resumes_and_splits_by_process(tmp_path):
    tok = ByteTokenizer()
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": f"record number {i} " * 3}) for i in range(400)))
    data = DataSection(source=str(tmp_path / "d.jsonl"), streaming=True, seq_len=16, validation_blocks=2)
    train, val = build(data, tok, seed=0)
    assert val.blocks.shape == (2, 16)
    in_order = [train.batch(k, 2, 0, 1) for k in range(5)]
    resumed, _ = build(data, tok, seed=0)
    assert torch.equal(resumed.batch(4, 2, 0, 1), in_order[4])  # a resumed stream skips what was consumed
    rank0, _ = build(data, tok, seed=0, rank=0, world_size=2)
    rank1, _ = build(data, tok, seed=0, rank=1, world_size=2)
    assert not torch.equal(rank0.batch(0, 2, 0, 2), rank1.batch(0, 2, 1, 2))  # each process reads its own shard


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    """2 micro-batches of 4 give the same step as 1 batch of 8: the loss is normalised over the window."""
    from accelerate import Accelerator

    from mmfree_cli.train.run import build_model, build_optimizer
    from mmfree_cli.train.trainer import Trainer

    path = write_recipe(tmp_path)
    weights = []
    for micro, accum in ((8, 1), (4, 2)):
        raw = json.loads(path.read_text())
        raw["train"].update(micro_batch_size=micro, grad_accum_steps=accum)
        raw["data"]["source"] = str(tmp_path / "small.txt")
        recipe = recipe_from_dict(raw, base_dir=tmp_path)
        tok = ByteTokenizer()
        torch.manual_seed(0)
        acc = Accelerator(cpu=True)
        model = build_model(recipe, tok).double()
        opt = build_optimizer(recipe, model)
        model, opt = acc.prepare(model, opt)
        train, val = build(recipe.data, tok, seed=0)
        trainer = Trainer(recipe, tmp_path, model, opt, train, val, acc)
        for _ in range(2):
            trainer._set_hyperparameters()
            trainer.train_step()
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=1e-9, msg=k)


def test_train_cli_writes_a_complete_run(tmp_path):
    recipe = write_recipe(tmp_path, train={"sample_prompt": "ROMEO:", "sample_tokens": 20})
    r = mmfree("train", str(recipe), "train.max_steps=6", "optimizer.lr=5e-3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = (tmp_path / "runs" / "latest").resolve()
    for name in ("config.json", "model.safetensors", "mmfree_tokenizer.json", "recipe.yaml", "metrics.jsonl",
                 "loss.png", "summary.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert "lr: 0.005" in (run / "recipe.yaml").read_text()
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "loss" in e] == [1, 2, 3, 4, 5, 6]
    assert {"val_loss", "val_ppl", "val_bpb"} <= set(next(e for e in entries if "val_loss" in e))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]  # keep_last 2
    model = from_pretrained(run)
    assert model.config.hidden_size == 32
    assert "sample" in r.stdout and "ROMEO:" in r.stdout


def test_hub_dataset_offline_is_one_clear_error(tmp_path):
    recipe = write_recipe(tmp_path, data={"source": "nobody-here/no-such-corpus", "streaming": True})
    r = mmfree("train", str(recipe), cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "data.source" in r.stderr and "Hub" in r.stderr


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(run / "model.safetensors")[0]


@pytest.mark.slow
def test_sigkill_then_resume_auto_gives_the_uninterrupted_weights(tmp_path):
    sections = dict(train={"max_steps": 40, "micro_batch_size": 8}, checkpoint={"every_steps": 4, "keep_last": 1},
                    eval={"every_steps": 10}, data={"seq_len": 64})
    recipe = write_recipe(tmp_path, **sections)
    r = mmfree("train", str(recipe), "train.run_name=straight", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "-m", "mmfree_cli.cli", "train", str(recipe), "train.run_name=killed"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_run = tmp_path / "runs" / "killed"
    deadline = time.time() + 600
    while not (killed_run / "checkpoints" / "step-0000008").is_dir():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_run / "summary.json").exists()  # it really died mid-run
    r = mmfree("train", str(recipe), "train.run_name=killed", "--resume", "auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming killed at step 8" in r.stdout
    summary = json.loads((killed_run / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["steps_this_session"] < 40
    straight, resumed = _final_weights(tmp_path / "runs" / "straight"), _final_weights(killed_run)
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    steps = [json.loads(line)["step"] for line in (killed_run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 41))  # the log reads as one run: no duplicates after the resume


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    recipe = write_recipe(tmp_path, train={"max_steps": 20}, checkpoint={"every_steps": 10}, eval={"every_steps": 10})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mmfree_cli.cli", "train", str(recipe)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    run = (tmp_path / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 20
    first = summary["first_tokens_per_process"]
    assert first[0] != first[1]  # the ranks saw different data
    digests = summary["weights_sha256_per_process"]
    assert digests[0] == digests[1] == tensors_digest(_final_weights(run))  # identical weights, as saved

"""Distillation: the chunked loss against its plain formula, teachers loaded from disk as a user
would (a tiny random transformers Llama, an mmfree full-precision run), the vocabulary check, the
logit cache, the hidden-state projection, and whole `mmfree distill` runs through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmfree_cli.errors import UserError
from mmfree_cli.recipe import load_recipe, model_config
from mmfree_cli.resources import embedded_corpus, recipes_dir
from mmfree_cli.train.distill import LogitCache, distill_loss, make_objective, teacher_recipe
from mmfree_cli.train.teacher import check_vocabulary, load_teacher
from tests.helpers import mmfree as run_cli

SMALL_STUDENT = {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64}


def reference_loss(zs, zt, y, alpha, t):
    ce = F.cross_entropy(zs, y, reduction="sum")
    kl = F.kl_div((zs / t).log_softmax(-1), (zt / t).log_softmax(-1), log_target=True, reduction="sum")
    return (1 - alpha) * ce + alpha * t * t * kl


@pytest.mark.parametrize("alpha,temperature,chunk", [(0.0, 1.0, 5), (0.5, 2.0, 7), (1.0, 4.0, 100)])
def test_chunked_loss_and_gradient_match_the_formula(alpha, temperature, chunk):
    torch.manual_seed(0)
    zs = (3 * torch.randn(63, 50, dtype=torch.float64)).requires_grad_()
    zt, y = 3 * torch.randn(63, 50, dtype=torch.float64), torch.randint(0, 50, (63,))
    loss, parts = distill_loss(zs, zt, y, alpha, temperature, chunk)
    ref = reference_loss(zs, zt, y, alpha, temperature)
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(parts[0], F.cross_entropy(zs, y, reduction="sum").detach(), rtol=1e-6, atol=1e-5)
    grad, = torch.autograd.grad(2.5 * loss, zs)
    ref_grad, = torch.autograd.grad(2.5 * ref, zs)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)  # fp32 inside, by design


def test_chunked_loss_keeps_bf16_logits_and_computes_in_fp32():
    torch.manual_seed(1)
    zs = torch.randn(40, 30, dtype=torch.bfloat16).requires_grad_()
    zt, y = torch.randn(40, 30, dtype=torch.bfloat16), torch.randint(0, 30, (40,))
    loss, _ = distill_loss(zs, zt, y, 0.5, 2.0, 8)
    ref = reference_loss(zs.float(), zt.float(), y, 0.5, 2.0)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-4)
    loss.backward()
    assert zs.grad.dtype == torch.bfloat16


def small_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "small.txt"
    if not corpus.exists():
        corpus.write_bytes(embedded_corpus().read_bytes()[:60_000])
    return corpus


def make_llama_teacher(tmp_path: Path) -> Path:
    """A randomly initialised Llama-style model and a BPE tokenizer, saved as a user's model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path / "llama-teacher"
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(small_corpus(tmp_path))], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_llama_teacher(tmp_path_factory.mktemp("teacher"))


def student_recipe(tmp_path: Path, teacher: Path | None, tokenizer: str = "bytes", vocab: int | None = None,
                   **sections) -> Path:
    model = dict(SMALL_STUDENT, **({"vocab_size": vocab} if vocab else {}))
    recipe = {"model": model, "tokenizer": {"name": tokenizer},
              "data": {"source": str(small_corpus(tmp_path)), "seq_len": 32, "validation_blocks": 4},
              "train": {"max_steps": 4, "micro_batch_size": 4, "sample_prompt": "", "threads": 1},
              "schedule": {"warmup_steps": 1}, "checkpoint": {"every_steps": 2}, "eval": {"every_steps": 2},
              "logging": {"every_steps": 1, "tensorboard": False},
              "distill": {"teacher": str(teacher) if teacher else None, "alpha": 0.7, "temperature": 2.0}}
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    path = tmp_path / "distill.yaml"
    path.write_text(json.dumps(recipe))
    return path


def mmfree(*args, **kw):
    return run_cli(*args, **{"env": {"HF_HUB_OFFLINE": "1"}, **kw})

def objective_for(path: Path, tokenizer):
    from accelerate import Accelerator

    from mmfree_cli.train.run import build_model
    recipe = load_recipe(path)
    torch.manual_seed(0)
    model = build_model(recipe, tokenizer)
    return recipe, model, make_objective(recipe, model, tokenizer, Accelerator(cpu=True))


def test_llama_teacher_loads_from_disk_and_drives_the_loss(tmp_path, llama_dir):
    from transformers import AutoModelForCausalLM

    from mmfree_cli.data.tokenizer import load_tokenizer
    tok = load_tokenizer(llama_dir)
    path = student_recipe(tmp_path, llama_dir, tokenizer=str(llama_dir), vocab=tok.vocab_size)
    _, model, objective = objective_for(path, tok)
    assert objective.teacher.kind == "transformers" and not objective.teacher.module.training
    assert all(not p.requires_grad for p in objective.teacher.module.parameters())
    ids = torch.tensor([tok.encode("ROMEO:\nBut soft, what light through yonder window breaks?")[:24]] * 2)
    loss, n = objective(model, ids)
    reference_teacher = AutoModelForCausalLM.from_pretrained(str(llama_dir)).eval()  # as transformers loads it
    with torch.no_grad():
        zt = reference_teacher(ids).logits[:, :-1].flatten(0, 1)
        zs = model(ids).logits[:, :-1].flatten(0, 1)
    assert n == 2 * 23
    torch.testing.assert_close(loss, reference_loss(zs, zt, ids[:, 1:].flatten(), 0.7, 2.0), rtol=1e-5, atol=1e-4)
    loss.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_distill_cli_from_a_transformers_llama_teacher(tmp_path, llama_dir):
    from mmfree_cli.data.tokenizer import load_tokenizer
    from mmfree_cli.model import from_pretrained
    vocab = load_tokenizer(llama_dir).vocab_size
    path = student_recipe(tmp_path, llama_dir, tokenizer=str(llama_dir), vocab=vocab)
    r = mmfree("distill", str(path), "optimizer.lr=5e-3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = (tmp_path / "runs" / "latest").resolve()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.yaml", "metrics.jsonl", "loss.png",
                 "summary.json"):
        assert (run / name).is_file(), name
    assert f"teacher: {llama_dir}" in (run / "recipe.yaml").read_text()
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "loss" in e] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    student = from_pretrained(run)
    assert student.config.ternary and student.config.vocab_size == vocab


def test_vocabulary_mismatch_is_one_clear_error(tmp_path, llama_dir):
    path = student_recipe(tmp_path, llama_dir)  # the student reads bytes, the teacher BPE tokens
    r = mmfree("distill", str(path), cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "tokenizer" in r.stderr and "differs" in r.stderr and "tokenizer.name" in r.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_bad_distill_settings_and_missing_teacher_via_cli(tmp_path):
    path = student_recipe(tmp_path, None, distill={"alpha": 1.5, "temperature": 0, "teacher_recipe": {"modle": {}}})
    r = mmfree("distill", str(path), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-2000:]
    for what in ("distill.alpha must be in [0, 1]", "distill.temperature must be > 0", "did you mean 'model'"):
        assert what in r.stderr, r.stderr
    path = student_recipe(tmp_path, tmp_path / "nowhere")
    r = mmfree("distill", str(path), cwd=tmp_path)
    assert r.returncode == 2 and "distill.teacher" in r.stderr and "not found" in r.stderr, r.stderr[-2000:]
    r = mmfree("distill", str(recipes_dir() / "distill-370m.yaml"), cwd=tmp_path)  # its placeholder, unfilled
    assert r.returncode == 2 and "/path/to/teacher not found — fill in" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["distill-tiny", "distill-370m"])
def test_shipped_distill_recipes_load(name):
    recipe = load_recipe(recipes_dir() / f"{name}.yaml")
    assert model_config(recipe).ternary and 0 < recipe.distill.alpha < 1
    if name == "distill-tiny":  # the embedded default trains its own, wider, full-precision teacher
        teacher = teacher_recipe(recipe, name)
        assert not model_config(teacher).ternary
        assert model_config(teacher).hidden_size > model_config(recipe).hidden_size


def test_ternary_and_tokenizerless_teachers_are_refused(tmp_path):
    from mmfree_cli.data.tokenizer import ByteTokenizer
    from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained
    save_pretrained(HGRNBitForCausalLM(preset("tiny", hidden_size=16, num_hidden_layers=1)), tmp_path / "ternary")
    with pytest.raises(UserError, match="ternary model"):
        load_teacher(tmp_path / "ternary")
    # no tokenizer files: the output width must be the student's vocabulary
    save_pretrained(HGRNBitForCausalLM(preset("tiny", vocab_size=300, hidden_size=16, ternary=False)), tmp_path / "wide")
    with pytest.raises(UserError, match="vocabularies differ"):
        check_vocabulary(tmp_path / "wide", ByteTokenizer())


def fp_teacher(tmp_path: Path) -> Path:
    from mmfree_cli.data.tokenizer import ByteTokenizer
    from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained
    torch.manual_seed(3)
    out = tmp_path / "fp-teacher"
    save_pretrained(HGRNBitForCausalLM(preset("tiny", hidden_size=48, num_hidden_layers=2, ternary=False)), out)
    ByteTokenizer().save(out)
    return out


def test_logit_cache_serves_the_same_targets_from_disk(tmp_path):
    from mmfree_cli.data.tokenizer import ByteTokenizer
    teacher = fp_teacher(tmp_path)
    path = student_recipe(tmp_path, teacher, distill={"cache_dir": str(tmp_path / "cache")})
    _, model, objective = objective_for(path, ByteTokenizer())
    ids = torch.randint(0, 256, (3, 32))
    first, _ = objective(model, ids)
    files = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 3
    fresh, _ = objective.teacher.logits_and_hidden(ids)
    cached = objective.cache.logits(ids, objective.teacher)
    assert torch.equal(cached, fresh.half())  # stored as float16, read back exactly
    objective.teacher.module = None  # a second pass must not need the teacher at all
    again, _ = objective(model, ids)
    assert torch.equal(first, again)
    assert isinstance(objective.cache, LogitCache)


def test_hidden_state_projection_is_trained(tmp_path):
    from mmfree_cli.data.tokenizer import ByteTokenizer
    teacher = fp_teacher(tmp_path)
    path = student_recipe(tmp_path, teacher, distill={"hidden_mse": 1.0, "alpha": 0.0})
    _, model, objective = objective_for(path, ByteTokenizer())
    (projection,) = objective.modules
    assert projection.weight.shape == (48, 32)  # student width 32 → teacher width 48
    ids = torch.randint(0, 256, (2, 32))
    loss, n = objective(model, ids)
    ce = F.cross_entropy(model(ids).logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
    assert loss.item() > ce.item()  # the MSE term is there
    loss.backward()
    assert projection.weight.grad.abs().sum() > 0 and model.model.layers[0].attn.i_proj.weight.grad.abs().sum() > 0


@pytest.mark.slow  # three training runs
def test_distill_trains_its_own_teacher_then_reuses_it(tmp_path):
    from mmfree_cli.model import HGRNBitConfig
    path = student_recipe(tmp_path, None, train={"max_steps": 2},
                          distill={"teacher_recipe": {"model": {"hidden_size": 48}, "train": {"max_steps": 2}}})
    r = mmfree("distill", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (teacher,) = (tmp_path / "runs").glob("distill-teacher-*")
    config = HGRNBitConfig.load(teacher)
    assert not config.ternary and config.hidden_size == 48
    student = (tmp_path / "runs" / "latest").resolve()
    assert student != teacher and f"teacher: {teacher}" in (student / "recipe.yaml").read_text()
    r = mmfree("distill", str(path), "train.run_name=second", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reusing" in r.stdout and (tmp_path / "runs" / "second" / "summary.json").is_file()


@pytest.mark.slow  # two training runs
def test_resume_from_a_checkpoint_restores_the_projection_and_matches_a_straight_run(tmp_path):
    from mmfree_cli.fileio import load_safetensors
    teacher = fp_teacher(tmp_path)
    path = student_recipe(tmp_path, teacher, distill={"hidden_mse": 0.5}, checkpoint={"every_steps": 2, "keep_last": 2})
    r = mmfree("distill", str(path), "train.run_name=straight", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "straight"
    straight = load_safetensors(run / "model.safetensors")[0]
    middle = run / "checkpoints" / "step-0000002"
    assert (middle / "model_1.safetensors").is_file()  # the projection is checkpointed with the model
    r = mmfree("distill", str(path), "train.run_name=straight", "--resume", str(middle), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps_this_session"] == 2
    resumed = load_safetensors(run / "model.safetensors")[0]
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


def test_teacher_in_bf16_is_frozen_and_close_to_fp32(tmp_path):
    teacher_dir = fp_teacher(tmp_path)
    full, half = load_teacher(teacher_dir, "float32"), load_teacher(teacher_dir, "bfloat16", "cpu")
    ids = torch.randint(0, 256, (2, 16))
    z32, h32 = full.logits_and_hidden(ids, want_hidden=True)
    z16, h16 = half.logits_and_hidden(ids, want_hidden=True)
    assert z16.dtype == torch.bfloat16 and not z16.requires_grad and h32.shape == (2, 16, 48)
    assert (z16.float() - z32).abs().max() < 0.1 * z32.abs().max()
    assert full.fingerprint != half.fingerprint  # cached logits are kept apart by dtype


@pytest.mark.slow  # three short training runs; the recorded comparison is bench/distill_gap.py
def test_distilled_student_beats_ce_only_for_the_same_steps(tmp_path, monkeypatch):
    from mmfree_cli.train import run as train
    from mmfree_cli.train.distill import run as distill
    monkeypatch.chdir(tmp_path)

    def recipe(name: str, model: dict, steps: int, lr: float, **distill_section) -> Path:
        path = student_recipe(tmp_path, None, model=model, train={"max_steps": steps, "run_name": name},
                              optimizer={"lr": lr}, checkpoint={"every_steps": 0}, eval={"every_steps": 0},
                              data={"validation_blocks": 32}, distill=distill_section)
        return path.rename(tmp_path / f"{name}.yaml")

    def val_loss(run: Path) -> float:
        return json.loads((run / "summary.json").read_text())["val_loss"]

    teacher = train(recipe("teacher", {"hidden_size": 64, "intermediate_size": 128, "ternary": False}, 80, 3e-3))
    ce = train(recipe("ce", {}, 40, 5e-3))
    kd = distill(recipe("kd", {}, 40, 5e-3, teacher=str(teacher), alpha=0.7, temperature=1.0))
    assert val_loss(teacher) < val_loss(ce)  # the teacher is the stronger model
    assert val_loss(kd) < val_loss(ce), (val_loss(teacher), val_loss(ce), val_loss(kd))


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_with_a_projection(tmp_path):
    teacher = fp_teacher(tmp_path)
    path = student_recipe(tmp_path, teacher, distill={"hidden_mse": 0.5})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mmfree_cli.cli", "distill", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(((tmp_path / "runs" / "latest").resolve() / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    digests = summary["weights_sha256_per_process"]
    assert digests[0] == digests[1]  # the ranks stayed in step, projection gradients included

"""The CPU integer engine: bit-exact with the numpy reference, its export, and its CLI paths."""

import json

import numpy as np
import pytest
import torch

from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines import cpu_int, load_engine
from mmfree_cli.engines.cpu_int import CompiledModel, CpuIntEngine
from mmfree_cli.engines.cpu_ternary import KERNELS, available, layout, matmul, padded, padded_rows
from mmfree_cli.export import run_export
from mmfree_cli.formats.intmodel import read_int_model
from mmfree_cli.model import save_pretrained
from mmfree_cli.quant import intref, intspec
from mmfree_cli.quant.intmodel import int_model_from_float
from tests.helpers import mmfree

BYTE_VOCAB = dict(vocab_size=260, bos_token_id=256, eos_token_id=257)



@pytest.fixture
def run_dir(tmp_path, small_model):
    """A saved random small model with the byte tokenizer, as a training run would leave it."""
    path = tmp_path / "runs" / "r1"
    save_pretrained(small_model(hidden_size=72, intermediate_size=100, **BYTE_VOCAB), path)
    ByteTokenizer().save(path)
    return path


KERNELS_HERE = available()


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("n,k,rows", [(5, 130, 1), (37, 256, 3), (64, 700, 2)])
def test_ternary_kernels_are_exact(kernel, n, k, rows):
    rng = np.random.default_rng(n)
    codes = rng.integers(-1, 2, (n, k)).astype(np.int8)
    q = np.zeros((rows, padded(k)), dtype=np.int8)
    q[:, :k] = rng.integers(-127, 128, (rows, k))
    exact = q[:, :k].astype(np.int64) @ codes.T.astype(np.int64)
    out = np.full((rows, n), -999, dtype=np.int64)  # every element must be written
    ones, zeros = np.ones((1, rows), dtype=np.int64), np.zeros((1, rows), dtype=np.int64)
    index = KERNELS.index(kernel)
    matmul(index, layout(codes, kernel), q[None], ones, zeros, out, 0, padded_rows(n))
    assert np.array_equal(out, exact)
    assert layout(codes, kernel).nbytes == padded_rows(n) * padded(k) // 4  # 2 bits a weight
    # three groups (stacked projections of one input width), each with its own activations and
    # requantisation multipliers, as the engine uses them
    q3 = np.stack([q, -q, np.roll(q, 1, axis=0)])
    mm = rng.integers(1, 2**31, (3, rows))
    me = rng.integers(1, 40, (3, rows))
    stacked = np.concatenate([layout(codes, kernel)] * 3)
    out3 = np.full((rows, 3 * n), -999, dtype=np.int64)
    for lo, hi in ((0, n + 1), (n + 1, len(stacked))):  # two threads' shares, one in mid-tile
        matmul(index, stacked, q3, mm, me, out3, lo, hi)
    want = np.concatenate([intref.requantize(g[:, :k].astype(np.int64) @ codes.T.astype(np.int64),
                                             mm[i][:, None], me[i][:, None]) for i, g in enumerate(q3)], axis=1)
    assert np.array_equal(out3, want)


@pytest.mark.parametrize("lim,sh", [(cpu_int.LIM_X, cpu_int.SH_X), (cpu_int.LIM_H, cpu_int.SH_H)])
def test_sigmoid_table_lookups_match_the_table(lim, sh):
    """The gathered lookups (eight at a time, then a scalar tail) against plain indexing, on views
    of every length 0..19 and the values at and past the table's ends."""
    rng = np.random.default_rng(sh)
    edges = np.array([0, 1, -1, lim, lim + 1, -lim, -lim - 1, 2**31 - 1, -2**31, lim >> 1], dtype=np.int64)
    y = np.concatenate([edges, rng.integers(-2**31, 2**31, 30), rng.integers(-lim, lim + 1, 30)])
    sig = cpu_int.SIG
    for start, length in ((0, len(y)), *((3, n) for n in range(20))):
        view = y[start:start + length]
        base, step = np.full(length, -7, np.int64), np.full(length, -7, np.int64)
        cpu_int._lookup(view, lim, sh, sig, base, step)
        i = np.minimum(np.abs(view), lim) >> sh
        assert np.array_equal(base, sig[i]) and np.array_equal(step, sig[i + 1].astype(np.int64) - sig[i])


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("shape,threads", [(dict(hidden_size=72, intermediate_size=100, vocab_size=97), 1),
                                           (dict(hidden_size=130, intermediate_size=64, vocab_size=61,
                                                 num_hidden_layers=2), 3)])
def test_engine_is_bit_exact_with_the_reference(small_model, shape, threads, kernel):
    im = int_model_from_float(small_model(seed=3, **shape))
    compiled = CompiledModel(im, kernel, threads)  # one thread, and more threads than cores
    tokens = np.random.default_rng(1).integers(0, shape["vocab_size"], (3, 7))
    state0 = intref.new_state(im, 3)
    state0[:] = np.random.default_rng(2).integers(-2**21, 2**21, state0.shape)  # a non-zero start
    want, want_state = intref.prefill(im, tokens, state0)
    for _ in range(2):  # the second call reuses the kept thread team
        got, got_state = compiled.forward(tokens, state0)
        assert np.array_equal(got, want) and np.array_equal(got_state, want_state)
    for t in range(2):  # decode-sized calls keep their buffers: the second must not see the first's
        got, got_state = compiled.forward(tokens[:, t:t + 1], state0)
        want, want_state = intref.prefill(im, tokens[:, t:t + 1], state0)
        assert np.array_equal(got, want) and np.array_equal(got_state, want_state)
    for batch in (1, 2):  # fewer rows than threads: the norms split by channels (3 threads)
        got, got_state = compiled.forward(tokens[:batch, :1], state0[:, :batch])
        want, want_state = intref.prefill(im, tokens[:batch, :1], state0[:, :batch])
        assert np.array_equal(got, want) and np.array_equal(got_state, want_state)
    want, want_state = intref.prefill(im, tokens, state0)  # a prefill calls the kept helpers back
    got, got_state = compiled.forward(tokens, state0)
    assert np.array_equal(got, want) and np.array_equal(got_state, want_state)
    got, got_state = compiled.forward(tokens[:1, :1], state0[:, :1])  # and they go back in after
    want, want_state = intref.prefill(im, tokens[:1, :1], state0[:, :1])
    assert np.array_equal(got, want) and np.array_equal(got_state, want_state)


def test_a_team_of_no_threads_is_refused():
    from mmfree_cli.engines.cpu_team import Team
    for n in (0, -1):
        with pytest.raises(ValueError, match="at least 1 thread"):
            Team(n)


def test_dropped_engines_stop_their_threads(small_model):
    import gc
    import threading
    import time
    im = int_model_from_float(small_model(seed=3, hidden_size=72, intermediate_size=100, vocab_size=97))

    def team_threads():
        return [t for t in threading.enumerate() if t.name.startswith("mmfree-cpu-team")]
    before = len(team_threads())
    for _ in range(3):  # created and dropped with their helpers in a decode loop, or at their start barrier
        compiled = CompiledModel(im, threads=3)
        compiled.forward(np.ones((1, 1), np.int64), intref.new_state(im, 1))
        del compiled
        compiled = CompiledModel(im, threads=2)
        del compiled
    gc.collect()
    deadline = time.monotonic() + 10
    while len(team_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(team_threads()) == before


def test_steps_after_prefill_continue_the_same_sequence(run_dir):
    engine = load_engine("cpu", run_dir)
    assert isinstance(engine, CpuIntEngine)
    tokens = torch.tensor([[72, 101, 108, 108, 111, 33], [87, 111, 114, 108, 100, 63]])
    full, state_full = engine.prefill_int(tokens, engine.new_state(2))
    part, state = engine.prefill_int(tokens[:, :4], engine.new_state(2))
    for t in (4, 5):
        logits, state = engine.step(tokens[:, t], state)
        assert torch.equal(logits, torch.from_numpy(intspec.logits_to_float(full[:, t])))
    assert np.array_equal(state, state_full)
    # batches split and joined keep each sequence's state
    one = engine.state_batch_select(state_full, [1])
    both = engine.state_concat([engine.state_batch_select(state_full, [0]), one])
    assert np.array_equal(both, state_full)


def test_export_round_trips_and_the_engine_reads_it(run_dir, tmp_path):
    out = run_export("cpu", run_dir, root=tmp_path)
    assert (tmp_path / "exports" / "cpu" / "latest").resolve() == out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "cpu" and manifest["table_sha256"] == intspec.table_digest()
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "mmfree_tokenizer.json"}
    from_export, from_run = read_int_model(out), read_int_model(run_dir)
    assert from_export.keys() == from_run.keys()
    assert all(np.array_equal(from_export[k], from_run[k]) for k in from_run)
    engine = load_engine("auto", out)  # the manifest's target picks the cpu engine
    assert engine.name == "cpu"
    assert engine.describe()["weight_bytes_per_token"] > 0


def test_cli_export_then_generate_with_the_cpu_engine(run_dir, tmp_path):
    r = mmfree("export", run_dir, "--target", "cpu", "-o", tmp_path / "e")
    assert r.returncode == 0, r.stderr
    r = mmfree("generate", tmp_path / "e", "Hello", "--engine", "cpu", "-n", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["text"] is not None


def test_cli_refuses_a_corrupt_export_in_one_line(run_dir, tmp_path):
    out = tmp_path / "e"
    run_export("cpu", run_dir, out)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = mmfree("generate", out, "Hi", "--engine", "cpu", "-n", "2")
    assert r.returncode == 2
    assert "checksum mismatch" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_export_of_a_missing_model_fails_cleanly(tmp_path):
    r = mmfree("export", tmp_path / "nothing", "--target", "cpu", cwd=tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = mmfree("export", "--target", "cpu", cwd=tmp_path)
    assert r.returncode == 2 and "mmfree train" in r.stderr


def test_cli_eval_compare_reports_agreement_and_perplexities(run_dir, tmp_path):
    text = tmp_path / "held_out.txt"
    text.write_text("To be, or not to be, that is the question. " * 8)
    r = mmfree("eval", run_dir, "--compare", "--data", text, "--context", "32", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tokens"] > 200 and 0.0 <= report["top1_agreement"] <= 1.0
    assert report["ppl_float"] > 1 and report["ppl_engine"] > 1
    r = mmfree("eval", run_dir, "--compare", "--data", tmp_path / "missing.txt")
    assert r.returncode == 2 and "missing.txt" in r.stderr


@pytest.mark.slow
def test_a_trained_model_drifts_little(tmp_path):
    """The fidelity targets on a quickly trained tiny-shaped byte model: perplexity within 2% of
    the float model's, top-1 agreement ≥ 97% (random models are no test of drift)."""
    from mmfree_cli.fidelity import HELD_OUT_FRACTION, compare
    from mmfree_cli.model import HGRNBitForCausalLM, preset
    from mmfree_cli.resources import embedded_corpus
    torch.manual_seed(0)
    data = np.frombuffer(embedded_corpus().read_bytes(), dtype=np.uint8).astype(np.int64)
    train = data[: int(len(data) * (1 - HELD_OUT_FRACTION))]
    model = HGRNBitForCausalLM(preset("tiny", intermediate_size=256))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(0)
    for _ in range(120):
        starts = rng.integers(0, len(train) - 129, 16)
        x = torch.from_numpy(np.stack([train[s:s + 128] for s in starts]))
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_pretrained(model.eval(), tmp_path / "run")
    ByteTokenizer().save(tmp_path / "run")
    report = compare(tmp_path / "run", "cpu", max_tokens=2048)
    assert report["ppl_float"] < 12  # it learned something
    assert abs(report["ppl_delta"]) <= 0.02 and report["top1_agreement"] >= 0.97, report


def test_llama_cpp_comparison_model_has_our_ternary_weights(tmp_path):
    """bench/peer_llamacpp's GGUF: every matrix of ours, in the ternary type, and nothing more."""
    import gguf  # the `bench` extra, also in `dev`

    from bench.peer_llamacpp import ternary_weight_count, write_gguf
    d, inner, layers, vocab = 256, 512, 2, 1000
    reader = gguf.GGUFReader(write_gguf(tmp_path / "m.gguf", "TQ2_0", d, inner, layers, vocab))
    ternary = [t for t in reader.tensors if t.tensor_type == gguf.GGMLQuantizationType.TQ2_0]
    assert sum(int(t.n_elements) for t in ternary) == ternary_weight_count(d, inner, layers, vocab)
    assert len(ternary) == 7 * layers + 1 and not list(tmp_path.glob("*.tmp"))
    assert ternary_weight_count(1024, 2816, 24, 32000) == 341_049_344  # the 370M shape


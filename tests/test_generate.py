"""Generation over the torch engine: greedy determinism, sampling parameters, stop strings, EOS,
streaming UTF-8, batched generation and prefix-state reuse, all on a small random byte-level model."""

from __future__ import annotations

import pytest
import torch

from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines import load_engine
from mmfree_cli.engines.torch_engine import TorchEngine
from mmfree_cli.errors import UserError
from mmfree_cli.generate import (
    Generation,
    PrefixCache,
    SamplingParams,
    StopMatcher,
    Utf8Stream,
    complete,
    generate_batch,
)
from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM, save_pretrained


def make_model_dir(path, seed: int = 0, hidden_size: int = 64, layers: int = 2, printable: bool = False):
    """A random byte-level model saved as a run directory (config, weights, tokenizer).

    printable: zero the output rows of every token but printable ASCII and newline, so greedy text
    is readable (those logits are exactly 0, below the best of ~95 random ones)."""
    torch.manual_seed(seed)
    tok = ByteTokenizer()
    config = HGRNBitConfig(vocab_size=tok.vocab_size, hidden_size=hidden_size, num_hidden_layers=layers,
                           intermediate_size=2 * hidden_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    model = HGRNBitForCausalLM(config)
    with torch.no_grad():  # forget gates of layers > 0 near 1: a long memory, so earlier text matters
        model.model.lower_bounds[1:] = 5.0
    if printable:
        keep = torch.zeros(tok.vocab_size, dtype=torch.bool)
        keep[32:127] = keep[10] = True
        with torch.no_grad():
            model.lm_head.weight[~keep] = 0.0
    save_pretrained(model, path)
    tok.save(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models decode fastest on one thread (and a loaded CI box makes more threads spin)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def engine(model_dir):
    return load_engine("auto", model_dir)


def test_load_picks_torch_and_greedy_is_deterministic(engine):
    assert isinstance(engine, TorchEngine)
    a = complete(engine, "Hello", max_new_tokens=30)
    assert a == complete(engine, "Hello", max_new_tokens=30)
    assert a != complete(engine, "Goodbye", max_new_tokens=30)


def test_from_model_matches_load(model_dir):
    """The training-time model (fake-quant every step) and the loaded one (weights quantized once)
    compute the same function; in float64 rounding differences cannot flip a token."""
    from mmfree_cli.data.tokenizer import load_tokenizer
    from mmfree_cli.model import from_pretrained
    loaded = load_engine("torch", model_dir, dtype="float64")
    twin = TorchEngine.from_model(from_pretrained(model_dir, dtype=torch.float64), load_tokenizer(model_dir))
    assert complete(twin, "abc", max_new_tokens=20) == complete(loaded, "abc", max_new_tokens=20)


def test_step_decoding_matches_full_forward(engine):
    """Greedy decoding by O(1) steps yields the tokens a full forward of the whole text predicts."""
    gen = Generation(engine, "The king", SamplingParams(max_new_tokens=25))
    gen.run()
    ids = gen.sequence.prompt_tokens + gen.sequence.tokens
    logits, _ = engine.prefill(torch.tensor([ids]), engine.new_state(1))
    predicted = logits[0, len(gen.sequence.prompt_tokens) - 1:-1].argmax(-1).tolist()
    agree = sum(p == t for p, t in zip(predicted, gen.sequence.tokens)) / len(gen.sequence.tokens)
    assert agree >= 0.95  # float32 + quantizers: agreement, not bit-equality (docs/design.md §2)


def test_sampling_is_seeded_and_params_matter(engine):
    kw = dict(max_new_tokens=40, temperature=1.0)
    assert complete(engine, "x", seed=1, **kw) == complete(engine, "x", seed=1, **kw)
    assert complete(engine, "x", seed=1, **kw) != complete(engine, "x", seed=2, **kw)
    greedy = complete(engine, "x", max_new_tokens=40)
    assert complete(engine, "x", seed=3, top_k=1, **kw) == greedy
    assert complete(engine, "x", seed=3, top_p=1e-6, **kw) == greedy
    assert complete(engine, "x", seed=3, min_p=1.0, **kw) == greedy


def test_repetition_penalty_changes_greedy_output(engine):
    plain = Generation(engine, "aaaa", SamplingParams(max_new_tokens=40))
    plain.run()
    penal = Generation(engine, "aaaa", SamplingParams(max_new_tokens=40, repetition_penalty=5.0))
    penal.run()

    def repeats(g):
        return len(g.sequence.tokens) - len(set(g.sequence.tokens))

    assert repeats(penal) < repeats(plain)


def test_byte_models_start_without_bos_like_their_training_data(engine):
    from mmfree_cli.generate import encode_prompt
    assert encode_prompt(engine, "ab") == [97, 98]
    assert encode_prompt(engine, "ab", add_bos=True) == [engine.tokenizer.bos_id, 97, 98]
    assert encode_prompt(engine, "") == [engine.tokenizer.eos_id]  # EOS separates training documents


def test_bad_dtype_is_a_user_error(model_dir):
    with pytest.raises(UserError, match="unknown dtype 'float7'"):
        load_engine("torch", model_dir, dtype="float7")


def test_bad_sampling_params_are_user_errors():
    with pytest.raises(UserError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(UserError, match="top_p.*min_p|min_p"):
        SamplingParams(top_p=0, min_p=2)
    with pytest.raises(UserError, match="unknown sampling parameter"):
        SamplingParams.from_options(temprature=1.0)


def test_stop_string_cuts_output_and_rolls_state_back(engine):
    full = Generation(engine, "Hello", SamplingParams(max_new_tokens=60))
    full.run()
    text = full.text
    stop = text[20:23]
    gen = Generation(engine, "Hello", SamplingParams(max_new_tokens=60, stop=(stop,)))
    streamed = "".join(gen)
    assert streamed == gen.text == text[:text.index(stop)]
    assert gen.finish_reason == "stop"
    # the state was rolled back to just after the last whole token before the stop string: the
    # state an uncut run had after that many tokens
    kept = len(gen.sequence.tokens)
    while ByteTokenizer().decode(gen.sequence.tokens[:kept]) != gen.text + gen.sequence.pending_text:
        kept -= 1
    ref = Generation(engine, "Hello", SamplingParams(max_new_tokens=kept + 1))
    ref.run()
    assert torch.equal(ref.sequence.state, gen.sequence.state)


def test_eos_ends_generation(engine):
    text_ids = Generation(engine, "Hi", SamplingParams(max_new_tokens=30))
    text_ids.run()
    tokens = text_ids.sequence.tokens
    engine.tokenizer.eos_id = tokens[10]
    try:
        gen = Generation(engine, "Hi", SamplingParams(max_new_tokens=30))
        gen.run()
        assert gen.finish_reason == "stop" and gen.sequence.tokens == tokens[:tokens.index(tokens[10])]
        gen = Generation(engine, "Hi", SamplingParams(max_new_tokens=30, ignore_eos=True))
        gen.run()
        assert gen.finish_reason == "length" and gen.sequence.tokens == tokens
    finally:
        engine.tokenizer.eos_id = ByteTokenizer().eos_id


def test_utf8_stream_waits_for_whole_characters():
    stream = Utf8Stream(ByteTokenizer())
    pieces = [stream.push(b) for b in "né€😀".encode()]
    assert "".join(pieces) == "né€😀"
    assert pieces[:2] == ["n", ""] and pieces[2] == "é"
    assert all(p == "" for p in pieces[-4:-1]) and pieces[-1] == "😀"


def test_stop_matcher_holds_back_possible_starts():
    m = StopMatcher(["</end>"])
    assert m.push("abc</e") == ("abc", None)
    assert m.push("x") == ("</ex", None)
    assert m.push("yy</en") == ("yy", None)
    assert m.push("d>zzz") == ("", 0)


def test_batched_generation_equals_one_by_one(model_dir):
    # float64: a batched matmul rounds differently from a single one, which in float32 can flip an
    # int8 activation level and so a near-tied greedy token of a random model (docs/design.md §2)
    engine = load_engine("torch", model_dir, dtype="float64")
    prompts = ["Hello", "abc", "The quick brown fox", "x" * 50, "é"]
    alone = [complete(engine, p, max_new_tokens=30) for p in prompts]
    together = [g.text for g in generate_batch(engine, prompts, SamplingParams(max_new_tokens=30))]
    assert together == alone
    sampled = generate_batch(engine, prompts[:2], SamplingParams(max_new_tokens=30, temperature=1.0, seed=7))
    assert [g.text for g in sampled] == [complete(engine, p, max_new_tokens=30, temperature=1.0, seed=7 + i)
                                         for i, p in enumerate(prompts[:2])]


def test_prefix_state_is_reused(engine):
    cache = PrefixCache(engine)
    system = "You are a helpful assistant.\n"
    outs = [Generation(engine, q, SamplingParams(max_new_tokens=20), prefix=system, cache=cache).run()
            for q in ("Hi", "Who?", "Hi")]
    assert cache.hits == 2
    assert outs[0] == outs[2] == complete(engine, system + "Hi", max_new_tokens=20)

"""`mmfree eval`: held-out text metrics with any engine, and lm-evaluation-harness through our
adapter on a local multiple-choice task, held to our own log-likelihood computation."""

import json
import math

import pytest
import torch

from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines import load_engine
from mmfree_cli.evaluate import load_text, run_tasks, text_metrics
from mmfree_cli.model import from_pretrained, save_pretrained
from tests.helpers import mmfree as run_cli

BYTE_VOCAB = dict(vocab_size=260, bos_token_id=256, eos_token_id=257)
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
QUESTIONS = [("What is 1 + 2?", ["3", "4", "twelve"], 0), ("Which is a colour?", ["red", "run", "rain"], 0),
             ("Pick the verb.", ["table", "swim"], 1), ("Opposite of up?", ["sideways", "down", "up"], 1),
             ("", ["an empty question", "x"], 0)]


def mmfree(*args, **kw):
    return run_cli(*args, **{"env": OFFLINE, **kw})

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved random small model with the byte tokenizer, as a training run leaves it."""
    from conftest import small_config
    from mmfree_cli.model import HGRNBitForCausalLM
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eval") / "runs" / "r1"
    model = HGRNBitForCausalLM(small_config(hidden_size=48, intermediate_size=64, **BYTE_VOCAB))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    save_pretrained(model, path)
    ByteTokenizer().save(path)
    return path


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """A local multiple-choice task: a JSONL file and the harness YAML that points at it."""
    root = tmp_path_factory.mktemp("tasks")
    rows = [{"question": q, "choices": c, "label": label} for q, c, label in QUESTIONS]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "tiny_qa.yaml").write_text(
        "task: tiny_qa\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {root / 'qa.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: label\ndoc_to_choice: choices\n'
        "target_delimiter: \" \"\nmetric_list:\n  - metric: acc\n")
    return root / "tiny_qa.yaml"


def reference_logprob(model, ids: list[int], first_scored: int) -> tuple[float, bool]:
    """log p(ids[first_scored:] | ids[:first_scored]) from one float64 forward of the whole sequence."""
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    targets = torch.tensor(ids[first_scored:])
    dist = logp[first_scored - 1:len(ids) - 1]
    return dist.gather(-1, targets[:, None]).sum().item(), bool((dist.argmax(-1) == targets).all())


def test_harness_loglikelihoods_match_our_own_computation(run_dir, task_file, monkeypatch):
    import datasets.config
    for key in OFFLINE:
        monkeypatch.setenv(key, "1")
        monkeypatch.setattr(datasets.config, key, True)
    engine = load_engine("torch", run_dir, dtype="float64")
    results = run_tasks(engine, [str(task_file)], log_samples=True)
    samples = sorted(results["samples"]["tiny_qa"], key=lambda s: s["doc_id"])
    assert len(samples) == len(QUESTIONS)

    model = from_pretrained(run_dir, dtype=torch.float64)  # the training-time fake-quant model
    tok = ByteTokenizer()
    correct = 0
    for sample, (question, choices, label) in zip(samples, QUESTIONS):
        scores = []
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            assert context == question and continuation == " " + choices[len(scores)]
            # byte-level runs start a document with no BOS; an empty context starts from EOS
            ctx = tok.encode(context) or [tok.eos_id]
            want, greedy = reference_logprob(model, ctx + tok.encode(continuation), len(ctx))
            got, got_greedy = resp[0]
            assert got == pytest.approx(want, abs=1e-6) and got_greedy == greedy
            scores.append(got)
        correct += max(range(len(scores)), key=scores.__getitem__) == label
    assert results["results"]["tiny_qa"]["acc,none"] == pytest.approx(correct / len(QUESTIONS))


def test_continuations_from_the_prefilled_state_equal_whole_sequences_on_the_cpu_engine(run_dir):
    from mmfree_cli.harness import EngineLM
    engine = load_engine("cpu", run_dir)
    lm = EngineLM(engine, batch_size=2)
    context = ByteTokenizer().encode("Question: what comes next?\nAnswer:")
    conts = [ByteTokenizer().encode(s) for s in (" yes", " no, never", " x", " maybe so")]
    for cont, (got, greedy) in zip(conts, lm.score_continuations(context, conts)):
        logits, _ = engine.prefill(torch.tensor([context + cont]), engine.new_state(1))
        logp = logits[0, len(context) - 1:-1].double().log_softmax(-1)
        want = logp.gather(-1, torch.tensor(cont)[:, None]).sum().item()
        assert got == pytest.approx(want, abs=1e-9)  # integer engine: split and whole runs are bit-exact
        assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


@pytest.mark.parametrize("context", [0, 40])
def test_text_metrics_score_every_token_once(run_dir, context):
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind. " * 2
    engine = load_engine("torch", run_dir, dtype="float64")
    report = text_metrics(engine, text, context=context)
    ids = ByteTokenizer().encode(text)
    assert report["tokens"] == report["bytes"] == len(ids)
    model = from_pretrained(run_dir, dtype=torch.float64)
    windows = [ids] if context == 0 else [ids[i:i + context] for i in range(0, len(ids), context)]
    nll = sum(-reference_logprob(model, [ByteTokenizer().eos_id] + w, 1)[0] for w in windows)
    assert report["nll"] == pytest.approx(nll, rel=1e-9)
    assert report["perplexity"] == pytest.approx(math.exp(nll / len(ids)))
    assert report["bits_per_byte"] == pytest.approx(math.log2(report["perplexity"]))  # one byte a token
    assert 0.0 <= report["top1"] <= 1.0


def test_load_text_reads_text_and_jsonl_files(tmp_path):
    (tmp_path / "a.txt").write_text("plain text\n")
    (tmp_path / "b.jsonl").write_text('{"body": "first"}\n{"body": "second"}\n')
    assert load_text(tmp_path / "a.txt") == "plain text\n"
    assert load_text(str(tmp_path / "b.jsonl"), text_field="body") == "first\n\nsecond"
    assert len(load_text("embedded")) > 10_000


def test_cli_eval_data_and_tasks_on_the_newest_run(run_dir, task_file, tmp_path):
    text = tmp_path / "held_out.txt"
    text.write_text("Now is the winter of our discontent made glorious summer. " * 4)
    r = mmfree("eval", "--tasks", task_file, "--data", text, "--json",
               cwd=run_dir.parent.parent)  # no MODEL: runs/ has one run, the newest
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["engine"] == "torch" and report["model"] == str(run_dir)
    assert report["text"]["tokens"] == len(text.read_bytes()) and report["text"]["bits_per_byte"] > 0
    assert [row["task"] for row in report["tasks"]] == ["tiny_qa"] and report["tasks"][0]["samples"] == 5
    assert 0.0 <= report["tasks"][0]["acc"] <= 1.0


def test_bare_eval_scores_the_embedded_held_out_text(run_dir):
    r = mmfree("eval", run_dir, "--max-tokens", "300", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"]["data"] == "embedded" and json.loads(r.stdout)["text"]["tokens"] == 300


def test_cli_eval_bad_inputs_fail_in_one_line(run_dir, tmp_path):
    for args, words in [(("--data", tmp_path / "missing.txt"), "missing.txt")]:
        r = mmfree("eval", run_dir, *args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unavailable_datasets_and_engines_are_user_errors(run_dir, tmp_path, monkeypatch):
    import datasets.config

    from mmfree_cli.errors import UserError
    from mmfree_cli.evaluate import evaluate
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(UserError, match="no-such-dataset"):
        load_text("no-such-user/no-such-dataset")
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match="no column 'text'.*--text-field"):
        load_text(tmp_path / "b.jsonl")
    with pytest.raises(UserError, match="unknown engine"):
        evaluate(str(run_dir), "warp", data="embedded")
    with pytest.raises(UserError, match="nope.yaml: task file not found"):
        evaluate(str(run_dir), "torch", tasks=[str(tmp_path / "nope.yaml")])


def test_rolling_loglikelihood_and_generation_through_the_adapter(run_dir):
    from lm_eval.api.instance import Instance

    from mmfree_cli.generate import complete
    from mmfree_cli.harness import EngineLM
    engine = load_engine("torch", run_dir, dtype="float64")
    lm = EngineLM(engine)
    text = "Some held-out words, scored whole."
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert rolling[0] == pytest.approx(-text_metrics(engine, text)["nll"], rel=1e-12)
    request = Instance("generate_until", {}, ("ROMEO:", {"until": ["\n"], "max_gen_toks": 12}), 0)
    want = complete(engine, "ROMEO:", max_new_tokens=12, stop=["\n"])
    assert lm.generate_until([request]) == [want] and "\n" not in want

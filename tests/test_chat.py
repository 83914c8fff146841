"""`mmfree chat` driven as a person would, in a pseudo-terminal; the session API behind it."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pexpect
import pytest
import torch

from mmfree_cli.chat import ChatSession, builtin_template, find_template, printable
from mmfree_cli.engines import load_engine
from mmfree_cli.generate import Generation, SamplingParams
from test_generate import make_model_dir

MMFREE = str(Path(sys.executable).parent / "mmfree")
GREEDY = SamplingParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("chatmodel"), printable=True)


@pytest.fixture(scope="module")
def engine(model_dir):
    # float64: the chat feeds only new text to the carried state while the references below read
    # the whole text at once; in float32 those two roundings can flip a near-tied token
    torch.set_num_threads(1)
    return load_engine("torch", model_dir, dtype="float64")


def expected_turns(engine, texts, template=None):
    session = ChatSession(engine, template, GREEDY)
    answers = []
    for text in texts:
        if text == "/reset":
            session.reset()
            continue
        gen = session.send(text)
        gen.run()
        session.finish(gen)
        answers.append(gen.text)
    return answers


def read_answer(child) -> str:
    child.expect(r"\[(\d+) tokens, [\d.]+ tokens/s, (\w+)\]")
    return child.before.replace("\r\n", "\n").rstrip("\n")


def test_chat_in_a_terminal(model_dir, engine, tmp_path):
    child = pexpect.spawn(MMFREE, ["chat", str(model_dir), "--template", "none", "-t", "0", "-n", "24",
                                   "--dtype", "float64"], cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, dimensions=(40, 200))
    child.expect("plain continuation")
    want = expected_turns(engine, ["Hello", "Hello", "/reset", "Hello"])
    answers = []
    for text in ["Hello", "Hello", "/reset", "Hello"]:
        child.expect_exact("you> ")
        child.sendline(text)
        child.expect_exact(text + "\r\n")  # the terminal's echo of the typed line
        if text == "/reset":
            child.expect_exact("(conversation reset)")
            continue
        answers.append(read_answer(child))
    assert answers == [printable(a) for a in want]
    assert answers[1] != answers[0]  # the second "Hello" continues the conversation in the state
    assert answers[2] == answers[0]  # after /reset the model starts afresh
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_commands_in_a_terminal(model_dir, tmp_path):
    child = pexpect.spawn(MMFREE, ["chat", str(model_dir), "--template", "dialogue", "-n", "8"],
                          cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    child.expect("template dialogue")
    child.sendline("/params temperature=0 top_k=5")
    child.expect(r"temperature=0 top_k=5")
    child.sendline("/params tempreature=1")
    child.expect("error: /params takes key=value")
    child.sendline("hi")
    child.expect_exact("assistant: ")
    first = read_answer(child)
    child.sendline("/save saved.chat")
    child.expect_exact("(saved to saved.chat)")
    child.sendline("/load nope.chat")
    child.expect("error: nope.chat: file not found")
    child.sendline("/load saved.chat")
    child.expect_exact("(loaded 2 messages from saved.chat)")
    child.sendline("/frobnicate")
    child.expect("unknown command /frobnicate")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and first


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(model_dir, tmp_path):
    # greedy: this model's greedy answer runs to the length limit (checked to 3,000 tokens), so Ctrl-C lands mid-answer
    # (sampled at seed 0 it stops after 407 tokens: under 1 s, sometimes before the interrupt arrived)
    child = pexpect.spawn(MMFREE, ["chat", str(model_dir), "--template", "none", "-n", "100000", "-t", "0"],
                          cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"},
                          # a suite started in the background (`cmd &` in a script) inherits SIGINT
                          # ignored, and Python then keeps ignoring it: give the chat a terminal's default
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect_exact("you> ")
    child.sendline("Hello")
    child.expect_exact("Hello\r\n")
    child.expect(r"(?s).{20}")  # the answer is streaming
    child.sendintr()
    child.expect(r"\[\d+ tokens, [\d.]+ tokens/s, interrupted\]")
    child.expect_exact("you> ")
    child.sendline("/params max_new_tokens=5")
    child.expect_exact("max_new_tokens=5")
    child.sendline("more")
    child.expect(r"\[5 tokens, [\d.]+ tokens/s, length\]")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_template_turns_feed_only_new_text_and_match_a_full_read(engine):
    """Turn 2 reads only what the template adds, yet answers as if the whole transcript were read."""
    template = builtin_template("dialogue")
    session = ChatSession(engine, template, GREEDY, system="Be brief.")
    for text in ("Hi there", "And now?"):
        gen = session.send(text)
        gen.run()
        session.finish(gen)
    transcript = template.render(session.messages[:-1], add_generation_prompt=True)
    assert gen.prompt_tokens < len(transcript.encode()) / 2
    full = Generation(engine, transcript, GREEDY.replace(stop=template.stop))
    assert full.run() == gen.text


def test_save_and_load_restore_the_state(engine, tmp_path):
    session = ChatSession(engine, None, GREEDY)
    for text in ("Once", " upon"):
        gen = session.send(text)
        gen.run()
        session.finish(gen)
    session.save(tmp_path / "c.chat")
    gen = session.send(" a time")
    want = gen.run()
    other = ChatSession(engine, None, SamplingParams(temperature=1.0))
    other.load(tmp_path / "c.chat")
    assert other.params == GREEDY and len(other.messages) == 4
    assert other.send(" a time").run() == want


def test_template_sources(model_dir, tmp_path):
    assert find_template(model_dir) is None  # a base model with no template: plain continuation
    assert find_template(model_dir, "chatml").stop == ("<|im_end|>",)
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "{{ bos_token }}{% for m in messages %}'
                                                    '{{ m.content }}{% endfor %}", "bos_token": "<s>", "eos_token": "</s>"}')
    t = find_template(tmp_path)
    assert t.render([{"role": "user", "content": "x"}], True) == "<s>x" and t.stop == ("</s>",)
    (tmp_path / "recipe.yaml").write_text("chat_template: chatml\n")
    (tmp_path / "tokenizer_config.json").unlink()
    assert find_template(tmp_path).name == "chatml"


def test_printable_hides_terminal_escapes():
    assert printable("a\x1b[2Jb\nc\td\r") == "a\ufffd[2Jb\nc\td\ufffd"


def test_chat_bad_model_is_one_line_error(tmp_path):
    import subprocess
    r = subprocess.run([MMFREE, "chat", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([MMFREE, "chat"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "mmfree train" in r.stderr


def _chat_transcript(model_dir, cwd, seed: int | None, script: list[str]) -> tuple[list[str], str]:
    """Type `script` into `mmfree chat` at temperature 0.7; the answers and the banner."""
    args = ["chat", str(model_dir), "--template", "none", "-t", "0.7", "-n", "24"]
    args += [] if seed is None else ["--seed", str(seed)]
    child = pexpect.spawn(MMFREE, args, cwd=str(cwd), encoding="utf-8", timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, dimensions=(40, 200))
    child.expect(r"seed (\d+); plain continuation")
    banner = child.after
    answers = []
    for text in script:
        child.expect_exact("you> ")
        child.sendline(text)
        child.expect_exact(text + "\r\n")
        if text == "/reset":
            child.expect_exact("(conversation reset)")
            continue
        answers.append(read_answer(child))
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    return answers, banner


def test_each_turn_draws_afresh_and_a_seed_replays_the_conversation(model_dir, tmp_path):
    """One random generator per conversation: the same prompt from the same state (after /reset,
    or by /retry) gets a new sample; --seed replays everything; no --seed draws a seed and shows it."""
    script = ["Hello", "Hello", "/reset", "Hello", "/retry", "/retry"]
    answers, banner = _chat_transcript(model_dir, tmp_path, 7, script)
    assert "seed 7" in banner
    after_reset, retried = answers[2], answers[3:]
    assert answers[0] != answers[1]
    assert after_reset != answers[0]  # same state, same prompt: a fresh draw (not re-seeded per turn)
    assert len({after_reset, *retried}) == 3  # /retry answers the last message again, each time anew
    again, _ = _chat_transcript(model_dir, tmp_path, 7, script)
    assert again == answers  # the seed replays the whole conversation
    other, _ = _chat_transcript(model_dir, tmp_path, 8, script)
    assert other != answers
    _, drawn = _chat_transcript(model_dir, tmp_path, None, ["Hello"])
    assert re.search(r"seed \d+", drawn)


def test_retry_restores_the_state_before_the_last_turn(engine):
    session = ChatSession(engine, None, SamplingParams(max_new_tokens=12, temperature=0.0))
    first = session.send("Hello")
    first.run()
    session.finish(first)
    state_after_first = session.state
    second = session.send("again")
    second.run()
    session.finish(second)
    retried = session.retry()
    retried.run()
    session.finish(retried)
    assert retried.text == second.text  # greedy: the same answer from the same state
    assert [m["content"] for m in session.messages] == ["Hello", first.text, "again", second.text]
    assert session.state is not state_after_first
    with pytest.raises(Exception, match="nothing to retry"):
        ChatSession(engine, None, GREEDY).retry()

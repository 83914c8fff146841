"""`mmfree chat` driven as a person would, in a pseudo-terminal; the session API behind it."""

from __future__ import annotations

import os
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
    child = pexpect.spawn(MMFREE, ["chat", str(model_dir), "--template", "none", "-n", "100000"],
                          cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    child.expect_exact("you> ")
    child.sendline("Hello")
    child.expect_exact("Hello\r\n")
    child.expect(r"\S{20}")  # the answer is streaming
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

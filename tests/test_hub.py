"""Hub ids (`org/name`, `org/name@rev`) wherever a model is taken, on a Hub cache laid out by the
test in the released MMfreeLM repos' layout, with HF_HUB_OFFLINE=1 (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import torch

from hub_cache import add_revision, repo_files
from mmfree_cli.chat import printable
from mmfree_cli.engines import load_engine
from mmfree_cli.generate import complete
from mmfree_cli.hub import display_name, looks_like_hub_id, parse_hub_id

MMFREE = str(Path(sys.executable).parent / "mmfree")
REPO = "ridger/MMfreeLM-test"
COMMIT_MAIN = "a" * 40
COMMIT_V2 = "b" * 40


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache with two revisions of REPO: main (sharded bf16) and tag v2 (one file, other weights)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    main = add_revision(cache, REPO, COMMIT_MAIN, repo_files(seed=0, sharded=True), refs=("main",))
    v2 = add_revision(cache, REPO, COMMIT_V2, repo_files(seed=1, sharded=False), refs=("v2",))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return {"cache": cache, "main": main, "v2": v2, "env": env}


def mmfree(hub, *args, cwd):
    return subprocess.run([MMFREE, *args], env=hub["env"], cwd=cwd, capture_output=True, text=True, timeout=120)


def expected(snapshot: Path, prompt: str, n: int = 12) -> str:
    return complete(load_engine("torch", snapshot), prompt, max_new_tokens=n)


def test_hub_ids_parse():
    assert parse_hub_id("ridger/MMfreeLM-370M") == ("ridger/MMfreeLM-370M", None)
    assert parse_hub_id("ridger/MMfreeLM-370M@v1.0") == ("ridger/MMfreeLM-370M", "v1.0")
    assert parse_hub_id("./runs/x") is None and parse_hub_id("a/b/c") is None and parse_hub_id("tiny") is None


def test_a_local_directory_wins_over_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert not looks_like_hub_id("runs/typo")  # a missing run, not the Hub organisation "runs"
    assert not looks_like_hub_id("exports/latest")  # even before exports/ exists
    assert looks_like_hub_id("ridger/MMfreeLM-370M")


def test_released_layout_is_chatted_with_by_id_offline(hub, tmp_path):
    """A sharded bf16 repo with Llama tokenizer files, chatted with by its id, HF_HUB_OFFLINE=1."""
    child = pexpect.spawn(MMFREE, ["chat", REPO, "--template", "none", "-t", "0", "-n", "12"],
                          cwd=str(tmp_path), env=hub["env"], encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect("plain continuation")
    child.expect_exact("you> ")
    child.sendline("the cat")
    child.expect_exact("the cat\r\n")
    child.expect(r"\[(\d+) tokens, [\d.]+ tokens/s, (\w+)\]")
    answer = child.before.replace("\r\n", "\n").strip("\n")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert answer == printable(expected(hub["main"], "the cat")).strip("\n")
    assert answer  # the model said something


def test_revision_is_honoured(hub, tmp_path):
    runs = {}
    for spec in (REPO, f"{REPO}@v2", f"{REPO}@{COMMIT_V2}"):
        r = mmfree(hub, "generate", spec, "hello there", "-n", "12", "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        runs[spec] = json.loads(r.stdout)
    assert Path(runs[REPO]["model"]).name == COMMIT_MAIN
    assert Path(runs[f"{REPO}@v2"]["model"]).name == COMMIT_V2
    assert runs[f"{REPO}@v2"]["text"] == runs[f"{REPO}@{COMMIT_V2}"]["text"] == expected(hub["v2"], "hello there")
    assert runs[REPO]["text"] == expected(hub["main"], "hello there")
    assert runs[REPO]["text"] != runs[f"{REPO}@v2"]["text"]  # other weights, other text


@pytest.mark.parametrize("args", [["generate", "ridger/not-cached", "hi"], ["chat", "ridger/not-cached"],
                                  ["info", "ridger/not-cached"], ["quantize", "ridger/not-cached"],
                                  ["generate", f"{REPO}@no-such-tag", "hi"]])
def test_an_uncached_id_fails_in_one_line_naming_download(hub, tmp_path, args):
    r = mmfree(hub, *args, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "HF_HUB_OFFLINE" in lines[0] and f"mmfree download {args[1]}" in lines[0]


def test_info_quantize_and_init_from_take_an_id(hub, tmp_path):
    r = mmfree(hub, "info", REPO, cwd=tmp_path)
    assert r.returncode == 0 and "hgrn_bit" not in r.stderr, r.stderr
    r = mmfree(hub, "quantize", f"{REPO}@v2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "exports" / "packed").glob("MMfreeLM-test-i2*"))  # named after the repo, not the hash
    assert display_name(hub["v2"]) == "MMfreeLM-test"


def test_from_pretrained_takes_an_id(hub, monkeypatch):
    import huggingface_hub.constants as hub_constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    from mmfree_cli.model import from_pretrained
    model = from_pretrained(f"{REPO}@v2")
    reference = from_pretrained(hub["v2"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_download_offline_returns_a_cached_id_and_names_the_fix_otherwise(hub, tmp_path):
    r = mmfree(hub, "download", f"{REPO}@v2", cwd=tmp_path)
    assert r.returncode == 0 and COMMIT_V2 in r.stdout, r.stderr
    r = mmfree(hub, "download", "ridger/not-cached", cwd=tmp_path)
    assert r.returncode == 2 and "unset HF_HUB_OFFLINE" in r.stderr and len(r.stderr.strip().splitlines()) == 1

"""Malformed files inside model and export directories: config.json with wrong types or absurd
sizes, broken tokenizers, manifests listing paths outside their directory. Each is one line
naming the file, and nothing broken is copied into an export that becomes `latest`."""

from __future__ import annotations

import json
import shutil

import pytest

from mmfree_cli.errors import UserError
from mmfree_cli.fileio import inside, read_json
from mmfree_cli.model.config import HGRNBitConfig
from mmfree_cli.paths import point_latest
from test_generate import make_model_dir
from test_hostile_cli import assert_one_line, run_all


@pytest.mark.parametrize("fields, needle", [
    ({"ternary": "no"}, "ternary must be true or false"),
    ({"rms_norm_eps": "1e-6"}, "rms_norm_eps must be a number"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be in (0, 1)"),
    ({"hidden_size": 10 ** 12}, "hidden_size must be at most"),
    ({"vocab_size": 64.5}, "vocab_size must be an integer"),
    ({"num_hidden_layers": True}, "num_hidden_layers must be an integer"),
    ({"hidden_act": 3}, "hidden_act must be a string"),
    ({"intermediate_size": -4}, "intermediate_size must be positive"),
])
def test_config_fields_are_checked(fields, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        HGRNBitConfig.from_dict({"model_type": "hgrn_bit", **fields})


def test_config_files_that_are_not_objects(tmp_path):
    for text, needle in (("[1, 2]", "not an object"), ("{", "not valid JSON"), ("[" * 100_000, "not valid JSON")):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(UserError, match=needle):
            HGRNBitConfig.load(tmp_path)


def test_manifest_paths_are_confined(tmp_path):
    (tmp_path / "ok.bin").write_bytes(b"x")
    assert inside(tmp_path, "ok.bin", "file") == tmp_path / "ok.bin"
    for bad in ("../../etc/hostname", "/etc/hostname", "", 5, "a/../../b"):
        with pytest.raises(UserError):
            inside(tmp_path, bad, "file")
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(UserError, match="outside"):
        inside(tmp_path, "link/hostname", "file")


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A project whose newest run has a damaged config or tokenizer, one run per case."""
    root = tmp_path_factory.mktemp("broken")
    cases = {"ternary-no": ("config.json", lambda c: {**c, "ternary": "no"}),
             "eps-string": ("config.json", lambda c: {**c, "rms_norm_eps": "tiny"}),
             "config-list": ("config.json", lambda c: [c]),
             "tokenizer-list": ("mmfree_tokenizer.json", lambda t: [t]),
             "tokenizer-type": ("mmfree_tokenizer.json", lambda t: {**t, "type": "words"})}
    runs = {}
    for name, (file, damage) in cases.items():
        run = make_model_dir(root / "runs" / name)
        (run / file).write_text(json.dumps(damage(json.loads((run / file).read_text()))))
        runs[name] = run
    good = make_model_dir(root / "runs" / "good")
    point_latest(good)
    return root, runs


def test_damaged_runs_are_one_line_and_never_exported(broken):
    root, runs = broken
    cases = {f"{name} {cmd}": [cmd, str(run), *(["--target", "cpu", "-o", f"exports/cpu/{name}"] if cmd == "export" else
                                              ["-o", f"exports/packed/{name}"])]
             for name, run in runs.items() for cmd in ("export", "quantize")}
    for name, r in run_all(cases, root).items():
        file = "config.json" if "config" in name or "ternary" in name or "eps" in name else "mmfree_tokenizer.json"
        assert_one_line(name, r, file)
    assert not (root / "exports" / "cpu" / "latest").exists()
    assert not (root / "exports" / "packed" / "latest").exists()
    exported = [p for p in (root / "exports").rglob("*") if p.is_file()] if (root / "exports").exists() else []
    assert exported == []


def test_a_broken_tokenizer_json_is_not_copied(tmp_path):
    from mmfree_cli.data.tokenizer import copy_tokenizer_files
    run = make_model_dir(tmp_path / "run")
    (run / "mmfree_tokenizer.json").unlink()
    (run / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}')
    with pytest.raises(UserError, match="not a valid tokenizer.json"):
        copy_tokenizer_files(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    shutil.rmtree(run)


def test_read_json_refuses_non_objects(tmp_path):
    (tmp_path / "m.json").write_text('"just a string"')
    with pytest.raises(UserError, match="not an object"):
        read_json(tmp_path / "m.json")

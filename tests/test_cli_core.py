"""`mmfree info` and `mmfree env` as a user runs them: real subprocesses, exit codes, one-line errors."""


import torch

from mmfree_cli.model import save_pretrained
from tests.helpers import mmfree


def test_info_preset_counts():
    r = mmfree("info", "370m")
    assert r.returncode == 0, r.stderr
    assert "374,108,160" in r.stdout


def test_info_model_dir(tmp_path, small_model):
    save_pretrained(small_model(), tmp_path / "m")
    r = mmfree("info", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "loads" in r.stdout and "yes" in r.stdout


def test_info_bad_input_is_one_line_exit_2(tmp_path):
    r = mmfree("info", str(tmp_path / "nothing"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "error:" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    r = mmfree("info", str(tmp_path / "bad"))
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr


def test_usage_errors_exit_2_without_a_traceback():
    for args in (["generate", "--bogus"], ["generate", "hi", "--threads", "-1"], ["info", "--nope"]):
        r = mmfree(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Error:" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_env_runs():
    r = mmfree("env")
    assert r.returncode == 0, r.stderr
    assert torch.__version__ in r.stdout


def test_help_lists_commands():
    r = mmfree("--help")
    assert r.returncode == 0 and "info" in r.stdout

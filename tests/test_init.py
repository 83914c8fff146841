"""`mmfree init`: the scaffold is copied from the installed package, existing files are never
overwritten without --force, and a scaffolded project trains as it is."""


from mmfree_cli.resources import recipes_dir
from tests.helpers import mmfree


def test_init_copies_scaffold_and_refuses_to_overwrite(tmp_path):
    r = mmfree("init", "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    demo = tmp_path / "demo"
    for name in ("tiny", "370m", "1.3b", "2.7b"):
        assert (demo / "recipes" / f"{name}.yaml").read_bytes() == (recipes_dir() / f"{name}.yaml").read_bytes()
    assert (demo / "accelerate" / "ddp.yaml").is_file() and (demo / "accelerate" / "fsdp.yaml").is_file()
    assert "mmfree train" in (demo / "README.md").read_text()

    (demo / "recipes" / "tiny.yaml").write_text("# mine\n")
    r = mmfree("init", "demo", cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr and "recipes/tiny.yaml" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert (demo / "recipes" / "tiny.yaml").read_text() == "# mine\n"  # untouched

    r = mmfree("init", "demo", "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (demo / "recipes" / "tiny.yaml").read_bytes() == (recipes_dir() / "tiny.yaml").read_bytes()


def test_scaffolded_project_trains(tmp_path):
    """mmfree init demo && cd demo && mmfree train recipes/tiny.yaml train.max_steps=5"""
    assert mmfree("init", "demo", cwd=tmp_path).returncode == 0
    demo = tmp_path / "demo"
    # the command of the issue, plus smaller batches so the default suite stays fast
    r = mmfree("train", "recipes/tiny.yaml", "train.max_steps=5", "train.micro_batch_size=4", "data.seq_len=64",
               "data.validation_blocks=4", "train.sample_tokens=16", cwd=demo)
    assert r.returncode == 0, r.stderr[-3000:]
    run = (demo / "runs" / "latest").resolve()
    assert (run / "model.safetensors").is_file() and (run / "summary.json").is_file()
    assert "trained →" in r.stdout

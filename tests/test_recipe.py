"""Recipes: the shipped ones load, overrides apply, and every kind of bad recipe ends in one clear
line with exit code 2 through the real CLI."""

import subprocess
import sys

import pytest
import yaml

from mmfree_cli.errors import UserError
from mmfree_cli.recipe import load_recipe, model_config, parse_overrides, recipe_from_dict
from mmfree_cli.resources import recipes_dir
from tests.helpers import mmfree


@pytest.mark.parametrize("name", ["tiny", "370m", "1.3b", "2.7b"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(recipes_dir() / f"{name}.yaml")
    config = model_config(recipe)
    assert config.num_hidden_layers > 0
    if name != "tiny":
        assert recipe.data.seq_len == 2048 and recipe.train.mixed_precision == "bf16"
        assert recipe.data.streaming and recipe.schedule.cut_at == 0.5


def test_overrides_apply_and_resolve():
    recipe = load_recipe(recipes_dir() / "tiny.yaml", ["optimizer.lr=3e-3", "train.max_steps=100",
                                                       "model.hidden_size=64", "schedule.cut_at=0.5"])
    assert recipe.optimizer.lr == 3e-3 and isinstance(recipe.optimizer.lr, float)
    assert recipe.train.max_steps == 100
    assert model_config(recipe).hidden_size == 64
    resolved = yaml.safe_load(recipe.to_yaml())
    assert resolved["model"]["hidden_size"] == 64 and resolved["schedule"]["cut_at"] == 0.5
    assert recipe_from_dict(resolved).to_dict() == resolved  # the resolved recipe reloads unchanged


def test_all_problems_reported_together():
    with pytest.raises(UserError) as e:
        recipe_from_dict({"optimizer": {"lr": -1, "betas": [0.9]}, "train": {"max_steps": "many"}})
    msg = str(e.value)
    assert "train.max_steps: expected an integer" in msg
    with pytest.raises(UserError) as e:
        recipe_from_dict({"optimizer": {"lr": -1, "betas": [0.9]}})
    assert "optimizer.lr must be > 0" in str(e.value) and "optimizer.betas" in str(e.value)


def test_bad_override_syntax():
    with pytest.raises(UserError, match="section.key=value"):
        parse_overrides(["lr=3"])


BAD_RECIPES = {
    "unknown key": ("optimizer:\n  lrr: 0.001\n", "did you mean 'lr'"),
    "unknown section": ("optimiser:\n  lr: 0.001\n", "did you mean 'optimizer'"),
    "wrong type": ("train:\n  max_steps: lots\n", "train.max_steps: expected an integer"),
    "missing data file": ("data:\n  source: ./no/such/corpus.txt\n", "data.source: ./no/such/corpus.txt not found"),
    "negative lr": ("optimizer:\n  lr: -0.001\n", "optimizer.lr must be > 0"),
    "yaml syntax": ("train:\n  max_steps: [1, 2\n", "YAML syntax error at line"),
    "unknown model field": ("model:\n  hiden_size: 64\n", "did you mean 'hidden_size'"),
}


def test_bad_recipes_are_one_line_exit_2(tmp_path):
    # one CLI process per bad recipe, all started at once (each pays the torch import)
    procs = {}
    for case, (text, _) in BAD_RECIPES.items():
        work = tmp_path / case.replace(" ", "_")
        work.mkdir()
        (work / "bad.yaml").write_text(text)
        procs[case] = (work, subprocess.Popen([sys.executable, "-m", "mmfree_cli.cli", "train", "bad.yaml"], cwd=work,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for case, (work, proc) in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (case, stderr)
        assert stderr.strip().count("\n") == 0, (case, stderr)
        assert BAD_RECIPES[case][1] in stderr and "Traceback" not in stderr, (case, stderr)
        assert not (work / "runs").exists()  # nothing half-written


def test_bad_override_on_command_line(tmp_path):
    r = mmfree("train", str(recipes_dir() / "tiny.yaml"), "optimizer.lr=-3", cwd=tmp_path)
    assert r.returncode == 2 and "optimizer.lr must be > 0" in r.stderr and "Traceback" not in r.stderr
    r = mmfree("train", str(tmp_path / "nothing.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "recipe not found" in r.stderr

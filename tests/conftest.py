import pytest
import torch

from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM


def small_config(**kw) -> HGRNBitConfig:
    base = dict(vocab_size=61, hidden_size=32, num_hidden_layers=3, intermediate_size=48,
                bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return HGRNBitConfig(**base)


@torch.no_grad()
def perturb(model):
    """Give norms and lower bounds non-trivial values (init has ones and zeros) so every parameter matters."""
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.uniform_(0.5, 1.5)
        elif name.endswith("lower_bounds"):
            p.normal_(0, 1)
    return model


@pytest.fixture
def small_model():
    def make(dtype=torch.float32, seed=0, **kw):
        torch.manual_seed(seed)
        model = HGRNBitForCausalLM(small_config(**kw)).to(dtype)
        return perturb(model).eval()
    return make


@pytest.fixture
def toy_run(tmp_path, small_model):
    """(model, run directory) of a small model whose rows and columns are not ÷4 or ÷5."""
    from mmfree_cli.model import save_pretrained
    model = small_model(hidden_size=36, intermediate_size=44)
    path = tmp_path / "runs" / "toy"
    save_pretrained(model, path)
    (path / "mmfree_tokenizer.json").write_text('{"type": "bytes"}\n')
    return model, path


def pytest_collection_modifyitems(config, items):
    """Slow tests first (synthesis and RTL simulation take minutes): with a worker per core
    (scripts/test.sh runs pytest-xdist) the many short tests then fill the other workers instead of
    one long test running alone at the end. The order is the same on every worker, as xdist needs."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

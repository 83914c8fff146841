"""The torch engine loads packed model directories (`mmfree quantize`) with their stored β."""

import pytest
import torch

from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines import load_engine
from mmfree_cli.export.packed import quantize
from mmfree_cli.model import save_pretrained
from mmfree_cli.model.frozen import FrozenBitLinear


@pytest.mark.parametrize("layout", ["i2", "tq1"])
def test_torch_engine_runs_a_packed_model_like_the_run_it_came_from(tmp_path, small_model, layout):
    run = tmp_path / "runs" / "r1"
    save_pretrained(small_model(vocab_size=260, bos_token_id=256, eos_token_id=257), run)
    ByteTokenizer().save(run)
    packed, _ = quantize(str(run), tmp_path / "packed", layout, "float32")
    engine = load_engine("torch", packed, dtype="float64")
    assert any(isinstance(m, FrozenBitLinear) for m in engine.model.modules())
    reference = load_engine("torch", run, dtype="float64")
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(0))
    got, state = engine.prefill(ids, engine.new_state(2))
    want, want_state = reference.prefill(ids, reference.new_state(2))
    # float64: the stored β (float32) and the run's recomputed β differ far below a rounding step
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    step, _ = engine.step(ids[:, 0], state)
    torch.testing.assert_close(step, reference.step(ids[:, 0], want_state)[0], rtol=0, atol=1e-5)

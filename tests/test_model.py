"""The model against its own recurrent form, a from-scratch reference, presets and training checks."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import small_config
from mmfree_cli.errors import UserError
from mmfree_cli.model import HGRNBitForCausalLM, from_pretrained, preset, save_pretrained


def decode_loop(model, ids, state=None):
    logits = []
    for t in range(ids.shape[1]):
        step_logits, state = model.step(ids[:, t], state)
        logits.append(step_logits)
    return torch.stack(logits, 1), state


@pytest.mark.parametrize("T", [1, 2, 5, 63, 300])
def test_recurrent_decoding_matches_parallel_float64(small_model, T):
    model = small_model(torch.float64)
    ids = torch.randint(0, model.config.vocab_size, (3, T))
    h0 = torch.randn(model.config.num_hidden_layers, 3, model.config.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        for state in (None, h0):
            par = model(ids, state=state)
            rec, rec_state = decode_loop(model, ids, state)
            assert (par.logits - rec).abs().max() <= 1e-8
            assert (par.state - rec_state).abs().max() <= 1e-8


def test_recurrent_decoding_float32_quantizers_off(small_model):
    model = small_model(torch.float32, ternary=False)
    ids = torch.randint(0, model.config.vocab_size, (2, 200))
    with torch.no_grad():
        par = model(ids).logits
        rec, _ = decode_loop(model, ids)
    assert (par - rec).abs().max() <= 1e-4


def test_recurrent_decoding_float32_quantized_agreement(small_model):
    """With quantizers on, float32 last-bit differences now and then flip an int8 level (DESIGN §2
    Parity); judge by agreement statistics."""
    model = small_model(torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (4, 256))
    with torch.no_grad():
        par = model(ids).logits
        rec, _ = decode_loop(model, ids)
    close = ((par - rec).abs().amax(-1) <= 1e-5).float().mean().item()
    top1 = (par.argmax(-1) == rec.argmax(-1)).float().mean().item()
    assert close >= 0.5, close
    assert top1 >= 0.95, top1


@pytest.mark.parametrize("name,expected", [("370m", 374.1e6), ("1.3b", 1364.8e6), ("2.7b", 2702.4e6)])
def test_preset_parameter_counts(name, expected):
    with torch.device("meta"):
        model = HGRNBitForCausalLM(preset(name), init=False)
    total = model.num_parameters()["total"]
    assert abs(total - expected) / expected <= 1e-3, total


def test_intermediate_sizes_follow_reference_rounding():
    assert [preset(n).intermediate_size for n in ("370m", "1.3b", "2.7b")] == [2816, 5632, 6912]


# ---- a from-scratch reference: the equations of docs/design.md §2 as a loop over time -------------

def _rms(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def _bitlinear(x, sd, prefix):
    xn = _rms(x, sd[prefix + ".norm.weight"], 1e-6)
    s = 127.0 / xn.abs().amax(-1, keepdim=True).clamp(min=1e-5)
    v = xn * s
    xq = (torch.sign(v) * torch.floor(v.abs() + 0.5)).clamp(-128, 127) / s
    w = sd[prefix + ".weight"]
    beta = w.abs().mean().clamp(min=1e-5)
    wq = torch.round(w / beta).clamp(-1, 1) * beta
    return xq @ wq.T


def reference_logits(sd, cfg, ids):
    L, eps = cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    p = torch.softmax(sd["model.lower_bounds"], 0)
    lb = torch.cumsum(p, 0) - p[0]
    B, T = ids.shape
    h = [torch.zeros(B, cfg["hidden_size"], dtype=torch.float64) for _ in range(L)]
    out = []
    for t in range(T):
        x = sd["model.embeddings.weight"][ids[:, t]]
        for l in range(L):
            pre = f"model.layers.{l}"
            a = _rms(x, sd[pre + ".attn_norm.weight"], eps)
            f = torch.sigmoid(_bitlinear(a, sd, pre + ".attn.f_proj"))
            if l > 0:
                f = lb[l] + (1 - lb[l]) * f
            i = F.silu(_bitlinear(a, sd, pre + ".attn.i_proj")) * (1 - f)
            h[l] = f * h[l] + i
            g = _rms(_bitlinear(a, sd, pre + ".attn.g_proj"), sd[pre + ".attn.g_norm.weight"], eps)
            x = x + _bitlinear(g * F.silu(h[l]), sd, pre + ".attn.o_proj")
            m = _rms(x, sd[pre + ".mlp_norm.weight"], eps)
            gate, up = _bitlinear(m, sd, pre + ".mlp.gate_proj").chunk(2, -1)
            x = x + _bitlinear(F.silu(gate) * up, sd, pre + ".mlp.down_proj")
        x = _rms(x, sd["model.norm.weight"], eps)
        out.append(_bitlinear(x, sd, "lm_head"))
    return torch.stack(out, 1)


def reference_checkpoint(tmp_path, d=24, L=3, V=57, inter=40, sharded=False):
    torch.manual_seed(3)
    sd = {"model.embeddings.weight": torch.randn(V, d), "model.lower_bounds": torch.randn(L, d),
          "model.norm.weight": torch.rand(d) + 0.5, "lm_head.weight": torch.randn(V, d) * 0.1,
          "lm_head.norm.weight": torch.rand(d) + 0.5}
    for l in range(L):
        pre = f"model.layers.{l}"
        sd[pre + ".attn_norm.weight"] = torch.rand(d) + 0.5
        sd[pre + ".mlp_norm.weight"] = torch.rand(d) + 0.5
        sd[pre + ".attn.g_norm.weight"] = torch.rand(d) + 0.5
        for k in "ifgo":
            sd[f"{pre}.attn.{k}_proj.weight"] = torch.randn(d, d) * 0.2
            sd[f"{pre}.attn.{k}_proj.norm.weight"] = torch.rand(d) + 0.5
        sd[pre + ".mlp.gate_proj.weight"] = torch.randn(2 * inter, d) * 0.2
        sd[pre + ".mlp.gate_proj.norm.weight"] = torch.rand(d) + 0.5
        sd[pre + ".mlp.down_proj.weight"] = torch.randn(d, inter) * 0.2
        sd[pre + ".mlp.down_proj.norm.weight"] = torch.rand(inter) + 0.5
    cfg = {"model_type": "hgrn_bit", "architectures": ["HGRNBitForCausalLM"], "vocab_size": V,
           "hidden_size": d, "num_hidden_layers": L, "intermediate_size": inter, "rms_norm_eps": 1e-6,
           "attn_mode": "fused_recurrent", "num_heads": 1, "expand_ratio": 1, "use_short_conv": False,
           "use_lower_bound": True, "hidden_ratio": 4, "hidden_act": "swish", "bos_token_id": 1,
           "eos_token_id": 2, "tie_word_embeddings": False, "transformers_version": "4.39.3",
           "torch_dtype": "float32"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if sharded:
        keys = sorted(sd)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        for fname, ks in shards.items():
            save_file({k: sd[k].to(torch.bfloat16) for k in ks}, str(tmp_path / fname))
        index = {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        save_file(sd, str(tmp_path / "model.safetensors"))
    return sd, cfg


def test_reference_checkpoint_matches_loop_reference_float64(tmp_path):
    sd, cfg = reference_checkpoint(tmp_path)
    model = from_pretrained(tmp_path, dtype=torch.float64)
    ids = torch.randint(0, cfg["vocab_size"], (2, 40))
    with torch.no_grad():
        ours = model(ids).logits
    ref = reference_logits({k: v.double() for k, v in sd.items()}, cfg, ids)
    assert (ours - ref).abs().max() <= 1e-8


def test_sharded_bf16_checkpoint_loads(tmp_path):
    sd, cfg = reference_checkpoint(tmp_path, sharded=True)
    model = from_pretrained(tmp_path)
    assert torch.equal(model.model.embeddings.weight, sd["model.embeddings.weight"].bfloat16().float())


def test_checkpoint_problems_are_named(tmp_path):
    sd, cfg = reference_checkpoint(tmp_path)
    del sd["model.norm.weight"]
    sd["model.extra"] = torch.zeros(1)
    sd["lm_head.weight"] = torch.zeros(3, 3)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError) as e:
        from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing keys model.norm.weight" in msg and "unexpected keys model.extra" in msg
    assert "lm_head.weight" in msg


def test_save_load_roundtrip_and_corruption(tmp_path, small_model):
    model = small_model()
    save_pretrained(model, tmp_path / "m")
    again = from_pretrained(tmp_path / "m")
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    raw = bytearray((tmp_path / "m" / "model.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="checksum"):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(UserError, match="corrupt or truncated"):
        from_pretrained(tmp_path / "m")


def test_unsupported_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="hgrn_bit"):
        from_pretrained(tmp_path)


def test_loss_shifts_labels_and_ignores():
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(small_config())
    ids = torch.randint(0, 61, (2, 10))
    labels = ids.clone()
    labels[:, :4] = -100
    out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, 3:-1].reshape(-1, 61), ids[:, 4:].reshape(-1))
    assert torch.allclose(out.loss, expected)


def test_gradcheck_quantizers_off():
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(small_config(hidden_size=6, num_hidden_layers=2, intermediate_size=4,
                                            vocab_size=7, ternary=False)).double()
    ids = torch.randint(0, 7, (1, 4))
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in model.named_parameters())

    def fn(*ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (ids,)).logits

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5)


def test_overfit_one_batch_quantized():
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(small_config(hidden_size=64, num_hidden_layers=2, intermediate_size=128))
    ids = torch.randint(3, 61, (4, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(200):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, loss.item()

"""`mmfree bench`: the side-by-side engine table on the tiny model with the CPU engines."""

import re

import pytest
import torch

from mmfree_cli.benchmark import bench, packed_bytes_per_token, parse_engines
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.errors import UserError
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained
from tests.helpers import mmfree

CPU_ENGINES = ["torch", "cpu", "onnx"]
NUMBER = r"[\d,]+\.?\d*"



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny preset (recipes/tiny.yaml's model) with random weights, saved as a run."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "runs" / "tiny"
    save_pretrained(HGRNBitForCausalLM(preset("tiny")), path)
    ByteTokenizer().save(path)
    return path


def test_cli_bench_prints_one_row_per_cpu_engine_and_a_plot(tiny_run, tmp_path):
    png = tmp_path / "bench.png"
    r = mmfree("bench", "--engines", ",".join(CPU_ENGINES), "--prefill-tokens", "16", "--decode-tokens", "4",
               "--repeats", "1", "--plot", png, cwd=tiny_run.parent.parent)  # no MODEL: the newest run
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "tiny: prefill 16 tokens, decode 4 tokens at batch 1" in out
    for header in ("prefill", "decode", "tok/s", "memory", "MiB", "bytes/", "GB/s", "% of", "bound"):
        assert header in out
    for name in CPU_ENGINES:
        row = next(line for line in out.splitlines() if re.match(rf"[│|]\s*{name}\s*[│|]", line))
        cells = [c.strip() for c in re.split(r"[│|]", row)[2:-1]]
        assert len(cells) == 6 and all(re.fullmatch(NUMBER, c) for c in cells), row
        prefill, decode, memory, nbytes, bandwidth, bound = (float(c.replace(",", "")) for c in cells)
        assert prefill > 0 and decode > 0 and nbytes > 0 and bandwidth > 0 and memory >= 0 and bound > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in out.replace("\n", "")


def test_bench_report_figures_hang_together(tiny_run):
    report = bench(str(tiny_run), "torch,cpu,cuda,fpga", prefill_tokens=8, decode_tokens=3, repeats=2,
                   bandwidth=10.0)
    rows = {row["engine"]: row for row in report["engines"]}
    assert list(rows) == ["torch", "cpu", "cuda", "fpga"]
    torch_row, cpu_row = rows["torch"], rows["cpu"]
    assert torch_row["bytes_per_token"] == packed_bytes_per_token(preset("tiny"))
    assert cpu_row["bytes_per_token"] > 0  # the cpu engine reports its own layout's bytes
    for row in (torch_row, cpu_row):
        assert len(row["decode_samples"]) == 2
        assert min(row["decode_samples"]) <= row["decode_tok_s"] <= max(row["decode_samples"]) and row["bandwidth_gb_s"] == 10.0 and not row["bandwidth_measured"]
        assert row["bound_fraction"] == pytest.approx(row["decode_tok_s"] * row["bytes_per_token"] / 10e9)
        assert row["bound_tok_s"] == pytest.approx(10e9 / row["bytes_per_token"])
    assert "fpga" in rows["fpga"]["error"] or "deploy" in rows["fpga"]["error"]
    if not torch.cuda.is_available():
        assert "GPU" in rows["cuda"]["error"]


def test_packed_bytes_per_token_counts_two_bits_a_ternary_weight():
    config = preset("tiny")
    d, n_layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    ternary = n_layers * (4 * d * d + d * 2 * inter + inter * d) + d * vocab
    norms = n_layers * (7 * d + inter + d) + 2 * d  # per layer: 2 block norms, g_norm, 5 BitLinear norms over d, 1 over I
    floats = norms + n_layers * d + d  # lower bounds and one embedding row
    assert packed_bytes_per_token(config) == ternary // 4 + 2 * floats


def test_bad_engine_lists_and_settings_are_user_errors(tiny_run):
    r = mmfree("bench", tiny_run, "--engines", "torch,warp")
    assert r.returncode == 2 and "warp" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="at least 1"):
        bench(str(tiny_run), "torch", repeats=0)
    assert parse_engines("cpu, torch,cpu") == ["cpu", "torch"]

"""Every format's reader refuses a version it does not know in one line that says what to run
(a UserError: exit code 2 through the CLI, as test_cpu_engine's corrupt-export test shows for the
same manifest check), and an export of the previous layout is refused with the command that
writes the current one. The directories here hold only what a reader looks at first."""

import json

import pytest
import torch

from mmfree_cli.errors import UserError
from mmfree_cli.fileio import save_safetensors
from mmfree_cli.formats import cuda, fpga, intmodel, onnx, packed, run
from mmfree_cli.formats.manifest import file_digests, read_manifest, write_manifest
from mmfree_cli.formats.ternary import open_ternary

CONFIG = {"model_type": "hgrn_bit", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 1,
          "intermediate_size": 48}


def _dir(tmp_path, manifest: dict):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert excinfo.value.exit_code == 2 and "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


READERS = {
    "packed": (packed.FORMAT, packed.FORMAT_VERSION, "packed", packed.read_packed, "mmfree quantize"),
    "cuda": (cuda.FORMAT, cuda.FORMAT_VERSION, "cuda", cuda.read_cuda_export, "--target cuda"),
    "cpu": (intmodel.FORMAT, intmodel.FORMAT_VERSION, "cpu", intmodel.read_int_model, "--target cpu"),
    "onnx": (onnx.FORMAT, onnx.FORMAT_VERSION, "onnx", onnx.read_onnx_manifest, "--target onnx"),
    "fpga": (fpga.FORMAT, fpga.FORMAT_VERSION, "fpga", fpga.Bundle.open, "--target fpga"),
}


@pytest.mark.parametrize("kind", READERS)
def test_a_future_version_is_refused_in_one_line(tmp_path, kind):
    fmt, version, target, read, remake = READERS[kind]
    path = _dir(tmp_path / kind, {"format": fmt, "format_version": version + 1, "target": target, "files": {}})
    with pytest.raises(UserError) as e:
        read(path)
    _one_line(e, f"format_version {version + 1}", "newer", "upgrade mmfree", remake)


OLD_LAYOUTS = {
    "cpu": {"target": "cpu", "schema_version": 1, "integer_spec_version": 1, "files": {}},
    "onnx": {"target": "onnx", "format_version": 1, "files": {}},
    "fpga": {"target": "fpga", "schema_version": 1, "files": {}},
}


@pytest.mark.parametrize("kind", OLD_LAYOUTS)
def test_an_export_of_the_previous_layout_says_how_to_re_export(tmp_path, kind):
    _, _, _, read, remake = READERS[kind]
    with pytest.raises(UserError) as e:
        read(_dir(tmp_path / kind, OLD_LAYOUTS[kind]))
    _one_line(e, remake)


def test_a_run_of_a_future_version_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    save_safetensors({"x": torch.zeros(1)}, tmp_path / "model.safetensors",
                     {run.META_FORMAT: run.FORMAT, run.META_VERSION: str(run.FORMAT_VERSION + 1)})
    with pytest.raises(UserError) as e:
        open_ternary(tmp_path)
    _one_line(e, f"format_version {run.FORMAT_VERSION + 1}", "mmfree train")


def test_the_manifest_lists_every_file_and_verify_names_the_changed_one(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / ".hidden").write_text("h")
    written = write_manifest(tmp_path, "mmfree-test", 3, target="t")
    assert set(written["files"]) == {"a.bin", "sub/b.txt"} == set(file_digests(tmp_path))
    assert read_manifest(tmp_path, "mmfree-test", 3, "redo")["target"] == "t"
    (tmp_path / "sub" / "b.txt").write_text("changed")
    with pytest.raises(UserError) as e:
        read_manifest(tmp_path, "mmfree-test", 3, "redo")
    _one_line(e, "sub/b.txt", "checksum mismatch", "redo")


def test_a_missing_optional_package_names_its_extra():
    from mmfree_cli.extras import missing_extra
    hint = missing_extra(ModuleNotFoundError("No module named 'numba'", name="numba"))
    assert hint.exit_code == 2 and "pip install 'mmfree-cli[cpu]'" in str(hint)
    assert "mmfree-cli[serve]" in str(missing_extra(ModuleNotFoundError(name="fastapi.responses")))
    assert missing_extra(ModuleNotFoundError(name="somethingelse")) is None


def test_a_packed_directory_is_not_re_ternarised(toy_run, tmp_path):
    """The integer model of a packed directory equals the run's bit for bit: its codes and β are
    taken as stored (re-deriving β = mean|codes·β| from them would shrink every layer's scale)."""
    import numpy as np

    from mmfree_cli.export.packed import quantize
    from mmfree_cli.quant.intmodel import int_model
    _, run_dir = toy_run
    out, _ = quantize(run_dir, tmp_path / "p", "tq1", float_dtype="float32")
    from_run, from_packed = int_model(open_ternary(run_dir)), int_model(open_ternary(out))
    assert from_run.keys() == from_packed.keys()
    for name, value in from_run.items():
        assert np.array_equal(value, from_packed[name]), name
    ternary = open_ternary(out)
    assert all(torch.equal(ternary.betas[k], b) for k, b in open_ternary(run_dir).betas.items())

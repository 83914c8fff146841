"""deploy against careless flags, crafted bundles and a busy or vanished card: one line each."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from mmfree_cli.errors import UserError
from mmfree_cli.formats.fpga import Bundle
from test_deploy import FUSE_MISSING, emulated_card, make_bundle, make_run, run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-hostile")
    run = make_run(root / "run")
    return run, make_bundle(run, root / "bundle")


def crafted(bundle, tmp_path, edit) -> Bundle:
    copy = tmp_path / "crafted"
    shutil.copytree(bundle, copy)
    man = json.loads((copy / "manifest.json").read_text())
    edit(man)
    (copy / "manifest.json").write_text(json.dumps(man))
    return copy


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["weights"].update(file="../../etc/hostname"), "points outside the directory"),
    (lambda m: m["weights"].update(file="/etc/hostname"), "must be a relative path"),
    (lambda m: m["golden"].update(path="../golden.safetensors"), "points outside the directory"),
    (lambda m: m["artifacts"].append({"path": "../../x", "kind": "bitstream"}), "points outside the directory"),
    (lambda m: m.pop("golden"), "golden"),
    (lambda m: m["model"]["dims"].update(d="64"), "model.dims.d"),
    (lambda m: m["weights"].update(bytes=-1), "weights.bytes"),
    (lambda m: m.update(design_id=5), "design_id"),
    (lambda m: m.update(card_memory_map={}), "card_memory_map"),
])
def test_crafted_manifests_are_refused_before_use(tiny, tmp_path, edit, needle):
    with pytest.raises(UserError, match=needle):
        Bundle.open(crafted(tiny[1], tmp_path, edit))


def test_crafted_bundle_through_the_cli_and_bad_selftest_steps(tiny, tmp_path):
    bad = crafted(tiny[1], tmp_path, lambda m: m["weights"].update(file="../../etc/hostname"))
    for args, needle in ((["deploy", str(bad), "--device", str(tmp_path / "xdma0")], "outside the directory"),
                         (["deploy", str(tiny[1]), "--device", "/dev/xdma0", "--selftest-steps", "-1"], "--selftest-steps"),
                         (["deploy", str(tiny[1]), "--device", "/dev/xdma0", "--selftest-steps", "0"], "--selftest-steps")):
        r = run_cli(*args)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_close_survives_a_vanished_card(monkeypatch):
    from mmfree_cli.deploy import xdma as module
    x = module.Xdma.__new__(module.Xdma)
    x.fds, x.bar = {"user": 1000, "h2c": 1001}, None

    def gone(fd):
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(module.os, "close", gone)
    x.close()
    assert x.fds == {}


@pytest.mark.skipif(FUSE_MISSING is not None, reason=FUSE_MISSING or "")
def test_a_second_deploy_on_a_busy_card_is_refused(tiny, tmp_path):
    from mmfree_cli.deploy.xdma import Xdma
    with emulated_card(tmp_path / "mnt", tiny[1]) as device:
        with Xdma(device):
            r = run_cli("deploy", str(tiny[1]), "--device", str(device), "--selftest-steps", "1")
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and "in use by another" in r.stderr, r.stderr
        r = run_cli("deploy", str(tiny[1]), "--device", str(device), "--selftest-steps", "1")
        assert r.returncode == 0, r.stderr

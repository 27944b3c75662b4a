"""``moco-ref export``: the file layout, the snippet of docs/results.md in PyTorch (features equal to 1e-9), the CLI."""

import sys

import numpy as np
import pytest
from helpers import assert_close, run_cli

from moco_ref.errors import CheckpointError, PathRefused, UserError
from moco_ref.moco import MoCo
from moco_ref.run.checkpoint import model_arrays, save_checkpoint
from moco_ref.run.config import TrainConfig
from moco_ref.tools.export import export_encoder

RTOL = 1e-9


def make_checkpoint(path, mlp=False, arch="resnet10", width=2):
    """A float64 MoCo after two steps (so BN running statistics are not the defaults), saved as the trainer does."""
    moco = MoCo(arch=arch, width=width, dim=8, K=16, m=0.9, T=0.2, mlp=mlp, bn_splits=2, seed=7, dtype="float64")
    rng = np.random.default_rng(0)
    for _ in range(2):
        moco.step(rng.standard_normal((4, 3, 16, 16)), rng.standard_normal((4, 3, 16, 16)))
    config = TrainConfig(arch=arch, width=width, dim=8, K=16, mlp=mlp, bn_splits=2, dtype="float64")
    save_checkpoint(path, model_arrays(moco.state_dict()), {"config": config.to_dict(), "epoch": 1})
    return moco


def make_encoder_checkpoint(path, arch, width):
    """A float64 encoder_q alone, with random BN affine parameters and running statistics (cheaper than training)."""
    from moco_ref.models import build_encoder

    encoder = build_encoder(arch, dim=8, width=width, seed=3, dtype="float64")
    rng = np.random.default_rng(4)
    state = {}
    for name, value in encoder.state_dict().items():
        if "bn" in name or "downsample.1" in name:
            if name.endswith("running_var"):
                value = rng.uniform(0.5, 2.0, value.shape)
            elif not name.endswith("num_batches_tracked"):
                value = value + 0.3 * rng.standard_normal(value.shape)
        state[f"encoder_q.{name}"] = value
    encoder.load_state_dict({k[len("encoder_q.") :]: v for k, v in state.items()})
    config = TrainConfig(arch=arch, width=width, dim=8, dtype="float64")
    save_checkpoint(path, state, {"config": config.to_dict()})
    return encoder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "checkpoint_last.npz"
    return path, make_checkpoint(path)


# ------------------------------------------------------------------ layout
def test_npz_holds_encoder_q_with_torchvision_names_and_no_fc(checkpoint, tmp_path):
    path, moco = checkpoint
    result = export_encoder(path, tmp_path / "encoder.npz")
    assert result["files"] == [str(tmp_path / "encoder.npz")]
    assert result["dropped"] == ["fc.bias", "fc.weight"]
    expected = {k: v for k, v in moco.encoder_q.state_dict().items() if not k.startswith("fc.")}
    with np.load(tmp_path / "encoder.npz", allow_pickle=False) as exported:
        assert list(exported.files) == list(expected), "names and PyTorch's order"
        for name, value in expected.items():
            assert np.array_equal(exported[name], value), name
            assert exported[name].dtype == value.dtype, name
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.npz"], "no temporary file left behind"


def test_keep_fc_keeps_the_head(checkpoint, tmp_path):
    path, moco = checkpoint
    result = export_encoder(path, tmp_path / "encoder.npz", keep_fc=True)
    assert result["dropped"] == []
    with np.load(tmp_path / "encoder.npz", allow_pickle=False) as exported:
        assert list(exported.files) == list(moco.encoder_q.state_dict())
        assert np.array_equal(exported["fc.weight"], moco.encoder_q.params["fc.weight"])


def test_mlp_head_is_dropped_too(tmp_path):
    make_checkpoint(tmp_path / "mlp.npz", mlp=True)
    result = export_encoder(tmp_path / "mlp.npz", tmp_path / "encoder.npz")
    assert result["dropped"] == ["fc.0.bias", "fc.0.weight", "fc.2.bias", "fc.2.weight"]


def test_a_failed_write_keeps_the_old_file(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    out = tmp_path / "encoder.npz"
    out.write_bytes(b"the previous export")

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(PathRefused, match="disk full"):
        export_encoder(path, out, replace=True)
    assert out.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["encoder.npz"]


def test_checkpoint_without_encoder_is_rejected(tmp_path):
    save_checkpoint(tmp_path / "other.npz", {"queue": np.zeros((2, 4))}, {"config": {}})
    with pytest.raises(CheckpointError, match="encoder_q"):
        export_encoder(tmp_path / "other.npz", tmp_path / "encoder.npz")


# ------------------------------------------------------------------ the snippet of docs/results.md, in PyTorch
@pytest.mark.parametrize("mlp", [False, True])
def test_the_docs_snippet_loads_into_torch_and_features_match(tmp_path, mlp):
    torch = pytest.importorskip("torch")
    from moco_ref.models import ARCHS
    from moco_ref.pytorch_moco import CifarResNet

    moco = make_checkpoint(tmp_path / "checkpoint.npz", mlp=mlp)
    export_encoder(tmp_path / "checkpoint.npz", tmp_path / "encoder.npz")
    encoder = moco.encoder_q
    model = CifarResNet(ARCHS[encoder.arch], encoder.width, encoder.dim, mlp=mlp).double()

    # --- the snippet of moco_ref/tools/export.py's docstring
    with np.load(tmp_path / "encoder.npz", allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # ---
    head = {"fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias"} if mlp else {"fc.weight", "fc.bias"}
    assert set(missing) == head and not unexpected

    model.eval()
    model.fc = torch.nn.Identity()  # the features before fc
    x = np.random.default_rng(5).standard_normal((4, 3, 16, 16))
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert_close(encoder.features(x), theirs, RTOL, "pooled features, PyTorch vs moco-ref")


def test_the_docs_snippet_with_torchvision(tmp_path):
    """The torchvision form of the snippet (CIFAR stem, no max-pool), when torchvision is installed."""
    torch = pytest.importorskip("torch")
    try:
        import torchvision
    except Exception as error:  # missing, or built for another torch
        pytest.skip(f"torchvision unavailable: {error}")

    encoder = make_encoder_checkpoint(tmp_path / "checkpoint.npz", "resnet18", 64)
    export_encoder(tmp_path / "checkpoint.npz", tmp_path / "encoder.npz")

    model = torchvision.models.resnet18(num_classes=10).double()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False).double()
    model.maxpool = torch.nn.Identity()
    with np.load(tmp_path / "encoder.npz", allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected

    model.eval()
    model.fc = torch.nn.Identity()
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16))
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert_close(encoder.features(x), theirs, RTOL, "pooled features, torchvision vs moco-ref")


# ------------------------------------------------------------------ safetensors
def hide_safetensors(monkeypatch):
    for name in [m for m in sys.modules if m == "safetensors" or m.startswith("safetensors.")] + ["safetensors"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_safetensors_without_the_package_is_one_clear_error(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    hide_safetensors(monkeypatch)
    with pytest.raises(UserError, match="pip install safetensors"):
        export_encoder(path, tmp_path / "encoder.safetensors")
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_safetensors_file_matches_the_npz(checkpoint, tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path, _ = checkpoint
    result = export_encoder(path, tmp_path / "encoder.safetensors")
    assert result["files"] == [str(tmp_path / "encoder.npz"), str(tmp_path / "encoder.safetensors")]
    tensors = safetensors_numpy.load_file(str(tmp_path / "encoder.safetensors"))
    with np.load(tmp_path / "encoder.npz", allow_pickle=False) as exported:
        assert sorted(tensors) == sorted(exported.files)
        for name in exported.files:
            assert np.array_equal(tensors[name], exported[name]), name


# ------------------------------------------------------------------ command line
def test_cli_writes_and_prints_the_snippet(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    code, out, err = run_cli(["export", "--checkpoint", str(path.parent), "--out", str(tmp_path / "e.npz")], capsys)
    assert code == 0, err
    assert f"wrote {tmp_path / 'e.npz'}" in out
    assert "torch.from_numpy" in out and "load_state_dict(state, strict=False)" in out
    with np.load(tmp_path / "e.npz", allow_pickle=False) as exported:
        assert "fc.weight" not in exported.files and len(exported.files) > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--checkpoint", "{tmp}/missing.npz", "--out", "{tmp}/e.npz"], "no checkpoint at"),
        (["--checkpoint", "{ckpt}", "--out", "{tmp}/e.pt"], "must end in .npz or .safetensors"),
        (["--checkpoint", "{ckpt}", "--out", "{tmp}/e.safetensors"], "pip install safetensors"),
    ],
)
def test_cli_bad_inputs_end_in_one_line(checkpoint, tmp_path, capsys, monkeypatch, args, message):
    hide_safetensors(monkeypatch)
    args = [a.format(tmp=tmp_path, ckpt=checkpoint[0]) for a in args]
    code, out, err = run_cli(["export", *args], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err

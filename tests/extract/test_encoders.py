"""Pretrained encoders of any kind (extract/encoders.py): small random models saved as torch.export programs and
TorchScript files, loaded, batched, normalised and selected; a run with two TorchScript sources end to end; bad
files refused in one line with nothing written."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import warnings

import numpy as np
import pytest
import torch
import zarr
from torch import nn

from _faults import copy_run, snapshot
from taskonomy import TaskonomyError
from taskonomy.cli import main
from taskonomy.config import EncoderConfig
from taskonomy.extract.encoders import encoder_source, load_encoder, normalise, select_feature_map
from taskonomy.runtime import cap_threads

cap_threads(2)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class ConvNet(nn.Module):
    """Two strided convs: (B, 3, S, S) -> (B, channels, S/4, S/4)."""

    def __init__(self, channels: int = 5) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.b = nn.Conv2d(6, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class TwoOutputs(nn.Module):
    """A pooled vector and the map, as many backbones return (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ConvNet()  # drawn first: the same weights as ConvNet() from the same seed

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return z.mean(dim=(2, 3)), z


class VectorOnly(TwoOutputs):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(1, 2, 3)).unsqueeze(1)  # (B, 1): no feature map


def _model(cls=ConvNet, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def _scripted(path, cls=ConvNet, seed: int = 0, trace: bool = False):
    model = _model(cls, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13
        program = torch.jit.trace(model, torch.zeros(1, 3, 16, 16)) if trace else torch.jit.script(model)
        program.save(str(path))
    return path


def _exported(path, cls=ConvNet, batch: int = 2, dynamic: bool = True, size: int = 16):
    x = torch.zeros(batch, 3, size, size)
    shapes = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic else None
    torch.export.save(torch.export.export(_model(cls), (x,), dynamic_shapes=shapes), str(path))
    return path


def _entry(kind: str, path, **extra) -> EncoderConfig:
    return EncoderConfig(kind=kind, file=str(path), **{"input_size": 16, "mean": MEAN, "std": STD, **extra})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoders")
    return {"script": _scripted(folder / "script.pt"), "trace": _scripted(folder / "trace.pt", trace=True),
            "dynamic": _exported(folder / "dynamic.pt2"), "fixed": _exported(folder / "fixed.pt2", batch=3,
                                                                             dynamic=False),
            "tuple": _exported(folder / "tuple.pt2", TwoOutputs), "vector": _scripted(folder / "vector.pt", VectorOnly)}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _expected(images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return _model()(normalise(images, 16, MEAN, STD))


def _one_line(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(TaskonomyError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_normalise():
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    x = normalise(white, 16, MEAN, STD)
    assert x.shape == (1, 3, 16, 16)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)]))
    assert normalise(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 24, (0.5,) * 3, (0.5,) * 3).eq(-1).all()


@pytest.mark.parametrize("name", ["script", "trace", "dynamic", "fixed"])
def test_every_kind_encodes_like_the_model(files, images, name):
    kind = "export" if files[name].suffix == ".pt2" else "torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.jit's deprecation warning is filtered where the file is loaded
        encoder, digest = load_encoder(name, _entry(kind, files[name]))
    assert encoder.fixed_batch == (3 if name == "fixed" else None)
    features = encoder.encode(images)  # 7 images: a fixed batch of 3 is fed 3 + 3 + (1 padded to 3)
    assert features.shape == (7, 5, 4, 4) and features.dtype == torch.float32
    torch.testing.assert_close(features, _expected(images), rtol=1e-5, atol=1e-5)
    assert len(digest) == 64


def test_output_selection(files, images):
    tuple_entry = _entry("export", files["tuple"], output=1)
    torch.testing.assert_close(load_encoder("t", tuple_entry)[0].encode(images), _expected(images))
    _one_line(r"returns 2 outputs; choose one with output: INDEX \(--output N, 0 to 1\)",
              load_encoder("t", _entry("export", files["tuple"]))[0].encode, images)
    _one_line(r"returns a \(7, 5\) tensor, not a feature map",
              load_encoder("t", _entry("export", files["tuple"], output=0))[0].encode, images)
    maps = torch.randn(2, 4, 3, 3)
    assert select_feature_map({"feat": maps, "logits": maps[:, :, 0, 0]}, "feat", "m") is maps
    _one_line(r"returns a dict \(feat, logits\); choose one", select_feature_map, {"feat": maps, "logits": 1},
              None, "m")
    tokens = torch.randn(2, 1 + 9, 4)  # a class token and a 3 x 3 grid of patch tokens
    grid = select_feature_map(tokens, None, "vit")
    assert grid.shape == (2, 4, 3, 3) and torch.equal(grid[:, :, 0, 1], tokens[:, 2])
    _one_line(r"returns a \(2,\) tensor, not a feature map", select_feature_map, torch.zeros(2), None, "m")


def test_files_and_hashes(files, tmp_path):
    path = files["script"]
    _one_line("does not exist", load_encoder, "s", _entry("torchscript", tmp_path / "absent.pt"))
    _one_line(r"has sha256 [0-9a-f]{16}\.\.\., not 00000000", load_encoder, "s",
              _entry("torchscript", path, sha256="00000000"))
    digest = load_encoder("s", _entry("torchscript", path))[1]
    assert load_encoder("s", _entry("torchscript", path, sha256=digest[:8].upper()))[1] == digest
    _one_line("script.pt is not a torch.export program", load_encoder, "s", _entry("export", path))
    _one_line("dynamic.pt2 is not a TorchScript file", load_encoder, "s", _entry("torchscript", files["dynamic"]))
    _one_line("exported for 16x16 inputs, not 32x32", load_encoder, "s",
              _entry("export", files["fixed"]).model_copy(update={"input_size": 32}))
    # the stamp follows the file's bytes and the entry: a replaced file re-extracts
    copy = tmp_path / "model.pt"
    copy.write_bytes(path.read_bytes())
    first = encoder_source("s", _entry("torchscript", copy))
    assert encoder_source("s", _entry("torchscript", copy)).hash == first.hash
    assert encoder_source("s", _entry("torchscript", copy, output=None, input_size=32)).hash != first.hash
    _scripted(copy, seed=1)
    assert encoder_source("s", _entry("torchscript", copy)).hash != first.hash


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="the backbones extra is installed")
def test_backbones_need_their_extra(files):
    entry = EncoderConfig(kind="timm", file=str(files["script"]), model="resnet50")
    _one_line(r"needs the timm package; install the optional extra: pip install -e '.\[backbones\]'",
              load_encoder, "r50", entry)


class Pyramid(TwoOutputs):
    """What timm's features_only models return: a list of maps, finest first."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.body.a(x)), self.body(x)]


def test_timm_and_torchvision_entries_through_stand_in_packages(monkeypatch, images, tmp_path):
    """The backbones extra is not installed here: stand-in modules with the two calls the loader makes check
    the weights file, features_only's last level and a named layer's output."""
    built = []

    def create_model(name, pretrained, features_only):
        assert not pretrained and features_only  # never a download; no layer named: the feature pyramid
        built.append(name)
        return Pyramid()

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=types.SimpleNamespace(
        get_model=lambda name, weights: TwoOutputs())))
    weights = tmp_path / "weights.pth"
    torch.save({"state_dict": _model(Pyramid).state_dict()}, weights)
    timm_entry = _entry("timm", weights, model="resnet50")
    torch.testing.assert_close(load_encoder("t", timm_entry)[0].encode(images), _expected(images))
    assert built == ["resnet50"]
    tv_entry = _entry("torchvision", weights, model="resnet50", layer="body")
    torch.testing.assert_close(load_encoder("v", tv_entry)[0].encode(images), _expected(images))
    _one_line("resnet50 has no layer 'head'", load_encoder, "v", tv_entry.model_copy(update={"layer": "head"}))
    other = tmp_path / "other.pth"
    torch.save(_model(ConvNet).state_dict(), other)
    _one_line(r"other.pth does not fit resnet50: 4 missing keys, 4 unexpected", load_encoder, "v",
              tv_entry.model_copy(update={"file": str(other)}))


def _features(run) -> zarr.Group:
    return zarr.open_group(str(run / "features.zarr"), mode="r")


def test_two_torchscript_sources_go_through_every_stage(faults_run, files, tmp_path, capsys):
    _, reference = faults_run
    run = copy_run(reference, tmp_path)
    one, second = _scripted(tmp_path / "one.pt"), _scripted(tmp_path / "second.pt", TwoOutputs, seed=2)
    digest = load_encoder("x", _entry("torchscript", second))[1]
    common = ["--input-size", "16", "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    assert main(["-q", "--run-dir", str(run), "add-source", "ts_one", "--kind", "torchscript",
                 "--file", str(one), *common]) == 0
    assert main(["-q", "--run-dir", str(run), "add-source", "ts_two", "--kind", "torchscript", "--file", str(second),
                 "--sha256", digest[:8], "--output", "1", *common]) == 0
    features = _features(run)
    assert features["ts_one/train"].shape[1:] == (5, 4, 4)  # cached at the encoder's own grid
    pixels = zarr.open_group(str(run / "data.zarr"), mode="r")
    rows = pixels["splits/test"][:]
    np.testing.assert_allclose(features["ts_one/test"][:].astype(np.float32),
                               _expected(torch.from_numpy(pixels["images/rgb"].get_orthogonal_selection((rows,))))
                               .numpy(), rtol=2e-3, atol=2e-3)  # float16 in the store
    transfers = zarr.open_group(str(run / "transfers.zarr"), mode="r")
    assert {"ts_one", "ts_two"} <= set(transfers.attrs["sources"])
    for command in (["ahp"], ["solve", "--sources", "ts_one,ts_two,normal", "--budget", "1"]):
        assert main(["-q", "--run-dir", str(run), *command]) == 0, command
    header = (run / "affinity.csv").read_text().splitlines()[0]
    assert "ts_one" in header and "ts_two" in header
    # the entries live in the run's config.yaml; a replaced file re-extracts only that source
    assert "kind: torchscript" in (run / "config.yaml").read_text()
    _scripted(one, seed=3)  # the same path, other bytes
    capsys.readouterr()
    assert main(["--run-dir", str(run), "extract"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"ts_one +(features )?extracted", err) and re.search(r"ts_two +(features )?up to date", err)


def test_bad_encoders_are_refused_in_one_line_and_change_nothing(faults_run, files, tmp_path, capsys):
    _, reference = faults_run
    run = copy_run(reference, tmp_path)
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a program")
    before = snapshot(run)
    capsys.readouterr()
    cases = [
        (["--kind", "export", "--file", str(garbage)], "garbage.pt2 is not a torch.export program"),
        (["--kind", "torchscript", "--file", str(files["script"]), "--sha256", "deadbeef"], "not deadbeef"),
        (["--kind", "torchscript", "--file", str(files["vector"])], "not a feature map"),
        (["--kind", "torchscript", "--file", str(tmp_path / "absent.pt")], "does not exist"),
        (["--kind", "export", "--file", str(files["tuple"]), "--input-size", "16"], "choose one with output"),
        (["--kind", "export", "--file", str(files["dynamic"]), "--mean", "1,2"], "mean"),
        (["--kind", "export"], "needs --file"),
        (["--encoder", str(files["script"]), "--kind", "export"], "either --encoder"),
        (["--kind", "timm", "--file", str(files["script"])], "names its model"),
    ]
    for args, message in cases:
        assert main(["--run-dir", str(run), "add-source", "bad", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
    assert snapshot(run) == before

"""The visualpriors encoder: architecture facts, checkpoint round trip, and one-line errors for bad files."""

from __future__ import annotations

import shutil

import pytest
import torch

from taskonomy import TaskonomyError
from taskonomy.extract.visualpriors import (
    TaskonomyEncoder,
    load_taskonomy_encoder,
    preprocess,
    save_taskonomy_checkpoint,
)
from taskonomy.runtime import cap_threads

cap_threads(2)


def _randomise_batch_norms(encoder: TaskonomyEncoder, seed: int = 0) -> None:
    """Fresh BNs are the identity; random statistics make the round trip compare something."""
    g = torch.Generator().manual_seed(seed)
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(scope="module")
def encoder() -> TaskonomyEncoder:
    torch.manual_seed(0)
    encoder = TaskonomyEncoder().eval()
    _randomise_batch_norms(encoder)
    return encoder


@pytest.fixture(scope="module")
def checkpoint(encoder, tmp_path_factory):
    return save_taskonomy_checkpoint(encoder, tmp_path_factory.mktemp("ckpt"), "normal")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return preprocess(torch.randint(0, 256, (2, 3, 512, 512), dtype=torch.uint8, generator=g))


def _raises_one_line(path, match: str) -> None:
    with pytest.raises(TaskonomyError, match=match) as info:
        load_taskonomy_encoder(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message


def test_round_trip_shapes_and_strides(encoder, checkpoint, images):
    assert checkpoint.name.startswith("normal_encoder-") and checkpoint.suffix == ".pth"
    sizes = {}

    def record(name):
        return lambda module, inputs, output: sizes.__setitem__(name, output.shape[-1])

    names = ("maxpool", "layer1", "layer2", "layer3", "layer4")
    hooks = [getattr(encoder, name).register_forward_hook(record(name)) for name in names]
    try:
        with torch.inference_mode():
            expected = encoder(images)
    finally:
        for hook in hooks:
            hook.remove()
    # TF-slim strides: layer1 and layer2 halve the size in their last block; layer3 and layer4 keep it.
    assert sizes == {"maxpool": 64, "layer1": 32, "layer2": 16, "layer3": 16, "layer4": 16}
    assert expected.shape == (2, 8, 16, 16)
    # GroupNorm(8, 8) normalises each channel of each image.
    assert torch.allclose(expected.mean(dim=(2, 3)), torch.zeros(2, 8), atol=1e-4)

    loaded = load_taskonomy_encoder(checkpoint)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.inference_mode():
        assert torch.equal(loaded(images), expected)


def test_architecture_facts(encoder):
    n_params = sum(p.numel() for p in encoder.parameters())
    assert 23_500_000 < n_params < 23_800_000  # ResNet-50 trunk (23.5M) + compress1 (0.15M)
    assert encoder.conv1.padding == (0, 0) and encoder.maxpool.ceil_mode
    for name, stride in (("layer1", 2), ("layer2", 2), ("layer3", 1), ("layer4", 1)):
        layer = getattr(encoder, name)
        assert layer[-1].conv2.stride == (stride, stride)
        assert all(block.conv2.stride == (1, 1) for block in layer[:-1])
        assert layer[0].downsample[0].stride == (1, 1)  # the projection does not stride
    names = set(encoder.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
                "layer4.2.bn3.weight", "compress1.weight", "compress_bn.running_mean"):
        assert key in names
    assert not any(k.startswith(("layer1.2.downsample", "groupnorm")) for k in names)  # no parameters there
    with torch.inference_mode():
        assert encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 8, 4, 4)


def test_bare_state_dict_with_module_prefix(encoder, tmp_path):
    path = tmp_path / "converted.pth"
    state = {f"module.{k}": v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    loaded = load_taskonomy_encoder(path)
    for key, value in encoder.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value)


def test_preprocess():
    images = torch.tensor([0, 255], dtype=torch.uint8).repeat(1, 3, 4, 2)  # (1, 3, 4, 4)
    x = preprocess(images, size=4)
    assert x.dtype == torch.float32 and x.min() == -1.0 and x.max() == 1.0
    assert preprocess(images, size=2).shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(images.float())


class _NotATensor:
    """Unpickling this needs a global, which weights_only refuses."""


def test_missing_and_unreadable_files(checkpoint, tmp_path):
    _raises_one_line(tmp_path / "absent_encoder.pth", "does not exist")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    _raises_one_line(truncated, "truncated or corrupt")
    a_list = tmp_path / "list.pth"
    torch.save([1, 2, 3], a_list)
    _raises_one_line(a_list, "holds a list")
    code = tmp_path / "code.pth"
    torch.save({"state_dict": _NotATensor()}, code)
    _raises_one_line(code, "weights_only")


def test_wrong_contents(encoder, tmp_path):
    state = dict(encoder.state_dict())
    del state["layer2.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(1)
    missing = tmp_path / "missing.pth"
    torch.save({"state_dict": state}, missing)
    _raises_one_line(missing, r"1 missing keys \(e.g. layer2.1.bn2.running_var\); 1 unexpected keys \(e.g. extra")
    shaped = tmp_path / "shaped.pth"
    torch.save({"state_dict": {**encoder.state_dict(), "compress1.weight": torch.zeros(16, 2048, 3, 3)}}, shaped)
    _raises_one_line(shaped, "compress1.weight")
    no_tensors = tmp_path / "epoch.pth"
    torch.save({"epoch": 3}, no_tensors)
    _raises_one_line(no_tensors, "no state dict")


def test_renamed_file_fails_the_hash_check(checkpoint, tmp_path):
    renamed = tmp_path / "normal_encoder-00000000.pth"
    shutil.copyfile(checkpoint, renamed)
    _raises_one_line(renamed, "corrupted or renamed")


def test_as_an_encoder_entry(encoder, checkpoint):
    """kind visualpriors in extract.encoders: the same features as load + preprocess, its sha256 checked."""
    from taskonomy.config import EncoderConfig
    from taskonomy.extract.encoders import load_encoder

    pixels = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    entry = EncoderConfig(kind="visualpriors", file=str(checkpoint), input_size=32)
    loaded, digest = load_encoder("vp", entry)
    assert (loaded.input_size, loaded.mean, loaded.std) == (32, (0.5,) * 3, (0.5,) * 3)  # the kind's [-1, 1]
    assert digest.startswith(checkpoint.stem.rsplit("-", 1)[1])
    with torch.inference_mode():
        expected = encoder(preprocess(pixels, 32))
    torch.testing.assert_close(loaded.encode(pixels), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(TaskonomyError, match="not 00000000 as its entry says"):
        load_encoder("vp", entry.model_copy(update={"sha256": "00000000"}))

"""features.zarr: layout, resume after an interrupted extraction, skip when up to date, recompute on change."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from taskonomy import TaskonomyError
from taskonomy.extract import features
from taskonomy.extract.features import Source, extract_features, open_features
from taskonomy.scenes.dataset import open_data
from _faults import store_bytes


def pooled_source(name: str, scale: float = 1.0) -> Source:
    """A real, cheap frozen representation: 4x4 average pooling of the image, scaled."""

    def encode(pixels: np.ndarray) -> np.ndarray:
        b, c, s, _ = pixels.shape
        pooled = pixels.reshape(b, c, s // 4, 4, s // 4, 4).mean(axis=(3, 5)) / 255.0
        return (pooled * scale).astype(np.float32)

    return Source(name, f"{name}-{scale}", encode, (3, 8, 8))


SOURCES = [pooled_source("alpha"), pooled_source("beta", 2.0)]


def test_every_source_and_split_is_written_chunked_along_images(tiny_data, tmp_path):
    data = open_data(tiny_data)
    out = extract_features(tmp_path / "f.zarr", data, SOURCES, batch=16, chunk_images=32, progress=False)
    assert out == {"alpha": "extracted", "beta": "extracted"}
    root = open_features(tmp_path / "f.zarr", ["alpha", "beta"])
    for split in ("train", "transfer", "test"):
        indices = data[f"splits/{split}"][:]
        array = root[f"alpha/{split}"]
        assert array.shape == (len(indices), 3, 8, 8) and array.dtype == np.float16
        assert array.chunks == (32, 3, 8, 8)
        expected = SOURCES[0].encode(data["images/rgb"].get_orthogonal_selection((indices,)))
        np.testing.assert_allclose(array[:], expected, atol=1e-3)
        assert root[f"alpha/views/egomotion/{split}"].shape == (len(indices), 3, 8, 8)
    assert root["beta"].attrs["encoder_hash"] == "beta-2.0" and root["beta"].attrs["complete"]


def test_interrupted_extraction_resumes_to_the_same_bytes(tiny_data, tmp_path, monkeypatch):
    data = open_data(tiny_data)
    extract_features(tmp_path / "fresh.zarr", data, SOURCES, batch=16, chunk_images=32, progress=False)
    real, calls = features._write_chunk, []

    def dies(out, c, lo, hi, block):
        calls.append(c)
        if len(calls) == 5:
            out[lo:hi] = block  # the chunk is on disk but not recorded: it must be redone, not trusted
            raise KeyboardInterrupt
        real(out, c, lo, hi, block)

    monkeypatch.setattr(features, "_write_chunk", dies)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tmp_path / "killed.zarr", data, SOURCES, batch=16, chunk_images=32, progress=False)
    with pytest.raises(TaskonomyError, match="incomplete"):
        open_features(tmp_path / "killed.zarr")
    monkeypatch.setattr(features, "_write_chunk", real)
    out = extract_features(tmp_path / "killed.zarr", data, SOURCES, batch=16, chunk_images=32, progress=False)
    assert out == {"alpha": "resumed", "beta": "extracted"}
    assert store_bytes(tmp_path / "killed.zarr") == store_bytes(tmp_path / "fresh.zarr")


def test_up_to_date_sources_are_skipped_and_a_changed_one_is_recomputed(tiny_data, tmp_path, monkeypatch):
    data = open_data(tiny_data)
    path = tmp_path / "f.zarr"
    extract_features(path, data, SOURCES, batch=16, chunk_images=32, progress=False)
    before = store_bytes(path)
    assert extract_features(path, data, SOURCES, progress=False) == {"alpha": "up to date", "beta": "up to date"}
    changed = [SOURCES[0], pooled_source("beta", 3.0)]  # beta's encoder changed
    assert extract_features(path, data, changed, batch=16, chunk_images=32, progress=False) == {
        "alpha": "up to date", "beta": "extracted"}
    after = store_bytes(path)
    alpha = [k for k in before if k.startswith("alpha/")]
    assert alpha and all(before[k] == after[k] for k in alpha), "an unchanged source must not be rewritten"
    root = zarr.open_group(str(path), mode="r")
    np.testing.assert_allclose(root["beta/test"][:], root["alpha/test"][:].astype(np.float32) * 3, rtol=2e-3)


def test_a_missing_source_is_reported(tiny_data, tmp_path):
    extract_features(tmp_path / "f.zarr", open_data(tiny_data), SOURCES[:1], progress=False)
    with pytest.raises(TaskonomyError, match="source 'beta' has no complete features"):
        open_features(tmp_path / "f.zarr", ["alpha", "beta"])

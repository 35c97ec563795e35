"""Tests of sparseflow.data on local data: IDX, Fashion-MNIST, augmentation, small datasets."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparseflow.data import (
    DATASETS,
    DataError,
    Dataset,
    RandomCrop,
    carve_heldout,
    load_dataset,
)
from sparseflow.data import paths as data_paths
from sparseflow.data.idx import parse_idx, read_idx, write_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist"
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the user's cache, data folder or mirror."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARSEFLOW_DATA", raising=False)
    monkeypatch.delenv("SPARSEFLOW_MIRROR", raising=False)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from(["u1", "i2", "f4"]),
)
def test_idx_round_trip_any_shape(shape, dtype):
    array = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.gz"
        write_idx(path, array)
        np.testing.assert_array_equal(read_idx(path), array)


def test_idx_header_layout():
    data = bytes([0, 0, 0x08, 2]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(6)
    assert parse_idx(data).shape == (3, 2)


def _idx_bytes() -> bytes:
    return (
        bytes([0, 0, 0x08, 2]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(range(6))
    )


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x00", "truncated"),
        (b"\x01\x00\x08\x01" + bytes(8), "magic"),
        (b"\x00\x00\x07\x01" + bytes(8), "dtype code"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x03", "truncated IDX header"),
        (_idx_bytes()[:-1], "truncated"),
        (_idx_bytes() + b"\x00", "trailing"),
        (gzip.compress(_idx_bytes(), mtime=0)[:-6], "gzip"),
        (b"\x1f\x8b" + bytes(30), "gzip"),
    ],
)
def test_idx_corrupt_file_names_file(tmp_path, payload, message):
    path = tmp_path / "broken-idx1-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST found by the lookup (not by root=), with and without held-out."""
    if not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", "/nonexistent-sparseflow-home")
        mp.delenv("SPARSEFLOW_DATA", raising=False)
        default = load_dataset("fashion_mnist", download=False)
        full = load_dataset("fashion_mnist", download=False, heldout=())
    return default, full


def _row_hashes(x: torch.Tensor, y: torch.Tensor) -> Counter:
    flat = x.reshape(len(x), -1).numpy()
    return Counter(
        hashlib.blake2b(row.tobytes() + bytes([int(label)]), digest_size=12).digest()
        for row, label in zip(flat, y.tolist(), strict=True)
    )


@needs_fashion
def test_fashion_shapes_and_types(fashion):
    ds, _ = fashion
    assert isinstance(ds, Dataset)
    assert ds.name == "fashion_mnist" and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.x_train.shape == (59000, 1, 28, 28) and ds.y_train.shape == (59000,)
    assert ds.x_test.shape == (10000, 1, 28, 28) and ds.y_test.shape == (10000,)
    assert [b[0].shape for b in ds.heldout] == [(1000, 1, 28, 28)]
    assert [b[1].shape for b in ds.heldout] == [(1000,)]
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.augment is None


@needs_fashion
def test_fashion_labels_and_normalisation(fashion):
    ds, _ = fashion
    counts = torch.bincount(ds.y_train, minlength=10)
    assert counts.numel() == 10 and int(ds.y_train.min()) == 0 and int(ds.y_train.max()) == 9
    assert int(counts.min()) > 5750 and int(counts.max()) <= 6000
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(float(ds.x_train.mean())) < 0.01 and abs(float(ds.x_train.std()) - 1) < 0.01
    assert abs(float(ds.x_test.mean())) < 0.03 and abs(float(ds.x_test.std()) - 1) < 0.03


@needs_fashion
def test_fashion_heldout_is_removed_from_train(fashion):
    ds, full = fashion
    ((hx, hy),) = ds.heldout
    train, held, everything = (
        _row_hashes(ds.x_train, ds.y_train),
        _row_hashes(hx, hy),
        _row_hashes(full.x_train, full.y_train),
    )
    # train + held-out is exactly the original training set (duplicates counted), so the
    # held-out examples were removed, not copied
    assert train + held == everything
    assert len(ds.x_train) + len(hx) == len(full.x_train) == 60000
    # and no held-out image that is unique in the training set appears in x_train
    assert not {h for h in held if everything[h] == 1} & set(train)


@needs_fashion
def test_fashion_heldout_fixed_across_run_seeds(fashion):
    ds, full = fashion
    torch.manual_seed(12345)
    np.random.seed(3)
    again = load_dataset("fashion_mnist", root=FASHION_DIR)
    torch.testing.assert_close(again.heldout[0][0], ds.heldout[0][0], rtol=0, atol=0)
    assert torch.equal(again.heldout[0][1], ds.heldout[0][1])
    # the held-out batch is the seed-0 choice of indices; another seed picks others
    index = torch.arange(len(full.x_train))
    _, _, [(chosen, _)] = carve_heldout(index, index, (1000,), seed=0)
    assert torch.equal(full.x_train[chosen], ds.heldout[0][0])
    _, _, [(other, _)] = carve_heldout(index, index, (1000,), seed=1)
    assert len(set(other.tolist()) & set(chosen.tolist())) < 100


@needs_fashion
def test_debian_files_hold_the_published_content():
    """Debian recompressed the .gz files (so their MD5s differ from the published ones),
    but the decompressed bytes match the published MD5s of the raw IDX files."""
    raw_md5 = {
        "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
    }
    for name, digest in raw_md5.items():
        data = gzip.decompress((FASHION_DIR / name).read_bytes())
        assert hashlib.md5(data).hexdigest() == digest, name


@needs_fashion
def test_fashion_augment_attached():
    ds = load_dataset("fashion_mnist", root=FASHION_DIR, heldout=(), augment=True)
    assert ds.augment == RandomCrop(pad=2, fill=(-0.2860 / 0.3530,))
    out = ds.augment(ds.x_train[:64], torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 28, 28)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFLOW_DATA", str(tmp_path / "env"))
    dirs = data_paths.candidate_dirs("fashion_mnist", root=tmp_path / "root")
    assert dirs == [tmp_path / "root", tmp_path / "root" / "fashion_mnist"]  # root alone
    dirs = data_paths.candidate_dirs("fashion_mnist")
    assert dirs == [
        tmp_path / "env" / "fashion_mnist",
        tmp_path / "env",
        tmp_path / "home" / ".cache" / "sparseflow" / "fashion_mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    assert data_paths.download_dir("mnist") == tmp_path / "env" / "mnist"
    assert data_paths.download_dir("mnist", root=tmp_path / "r") == tmp_path / "r"
    monkeypatch.delenv("SPARSEFLOW_DATA")
    assert data_paths.download_dir("mnist") == tmp_path / "home/.cache/sparseflow/mnist"


# ---------------------------------------------------------------- augmentation


def _reference_crops(image: torch.Tensor, pad: int, fill: float, flip: bool) -> list:
    """Every crop (and mirror) of one (C, H, W) image, written with plain loops."""
    c, h, w = image.shape
    padded = torch.full((c, h + 2 * pad, w + 2 * pad), fill)
    padded[:, pad : pad + h, pad : pad + w] = image
    crops = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            crops.append(crop)
            if flip:
                crops.append(crop.flip(-1))
    return crops


def test_shift_shape_and_determinism():
    x = torch.randn(16, 1, 28, 28)
    aug = RandomCrop(pad=2, fill=(-1.0,))
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(7)
    assert not torch.equal(aug(x, gen), aug(x, gen))  # the generator state advances


def test_crop_flip_on_hand_made_image():
    image = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, 2, 2)
    batch = image.expand(400, 1, 2, 2)
    out = RandomCrop(pad=1, flip=True, fill=(0.0,))(batch, torch.Generator().manual_seed(0))
    seen = {tuple(o.flatten().tolist()) for o in out}
    allowed = {tuple(c.flatten().tolist()) for c in _reference_crops(image, 1, 0.0, True)}
    assert seen <= allowed
    assert (1.0, 2.0, 3.0, 4.0) in seen  # centred, not flipped
    assert (2.0, 1.0, 4.0, 3.0) in seen  # centred, flipped
    assert (0.0, 0.0, 0.0, 1.0) in seen  # shifted down-right by one: zeros padded in
    assert len(seen) == 18  # all 9 offsets, each with and without flip


def test_crop_flip_matches_reference_per_example():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(24, 3, 6, 5, generator=gen)
    fills = (0.5, -0.5, 0.0)
    out = RandomCrop(pad=2, flip=True, fill=fills)(x, gen)
    flipped = 0
    for xi, oi in zip(x, out, strict=True):
        # candidates per channel, each padded with its own value, in the same order
        cands = [_reference_crops(xi[c : c + 1], 2, fills[c], True) for c in range(3)]
        matches = [
            k
            for k in range(len(cands[0]))
            if all(torch.equal(oi[c : c + 1], cands[c][k]) for c in range(3))
        ]
        assert matches, "output is not a crop (or mirrored crop) of its input"
        flipped += matches[0] % 2
    assert 0 < flipped < 24


def test_flip_probability_about_half():
    image = torch.arange(4.0).reshape(1, 1, 1, 4).expand(2000, 1, 1, 4)
    out = RandomCrop(pad=0, flip=True)(image, torch.Generator().manual_seed(3))
    frac = float((out[:, 0, 0, 0] == 3).float().mean())
    assert 0.45 < frac < 0.55


def test_replicate_padding():
    x = torch.tensor([[[[5.0, 6.0], [7.0, 8.0]]]]).expand(200, 1, 2, 2)
    out = RandomCrop(pad=1)(x, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {5.0, 6.0, 7.0, 8.0}
    assert (5.0, 5.0, 5.0, 5.0) in {tuple(o.flatten().tolist()) for o in out}


def test_augment_rejects_non_batches():
    with pytest.raises(ValueError):
        RandomCrop(pad=1)(torch.zeros(3, 4, 4), torch.Generator())


# ---------------------------------------------------------------- small datasets, errors


def test_digits():
    ds = load_dataset("digits", heldout=(200,))
    assert ds.x_train.shape == (1300, 1, 8, 8) and ds.x_test.shape == (297, 1, 8, 8)
    assert ds.heldout[0][0].shape == (200, 1, 8, 8)
    assert ds.num_classes == 10 and ds.input_shape == (1, 8, 8)
    assert abs(float(ds.x_train.mean())) < 0.05 and abs(float(ds.x_train.std()) - 1) < 0.05
    assert load_dataset("digits", heldout=(), augment=True).augment.pad == 1


def test_mnist1d_is_generated_and_leaves_global_rngs_alone():
    pytest.importorskip("mnist1d")
    np_state, py_state = np.random.get_state(), random.getstate()
    ds = load_dataset("mnist1d", heldout=(500,), num_samples=1000)
    assert ds.x_train.shape == (300, 40) and ds.x_test.shape == (200, 40)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    with pytest.raises(DataError, match="unknown option"):
        load_dataset("mnist1d", url="http://example.invalid")
    with pytest.raises(DataError, match="no augmentation"):
        load_dataset("mnist1d", heldout=(), num_samples=100, augment=True)


def test_synthetic_shapes_determinism_and_learnability():
    ds = load_dataset("synthetic")
    assert ds.x_train.shape == (512, 20) and ds.x_test.shape == (256, 20)
    assert ds.heldout[0][0].shape == (1000, 20) and ds.num_classes == 4
    again = load_dataset("synthetic")
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.x_test, again.x_test)
    # the test set does not depend on how many held-out examples were carved
    assert torch.equal(load_dataset("synthetic", heldout=(10,)).x_test, ds.x_test)
    # a nearest-class-mean classifier learns it
    means = torch.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(4)])
    pred = torch.cdist(ds.x_test, means).argmin(1)
    assert float((pred == ds.y_test).float().mean()) > 0.8
    img = load_dataset(
        "synthetic", input_shape=[1, 8, 8], n_train=64, num_classes=3, heldout=(16, 8), augment=True
    )
    assert img.x_train.shape == (64, 1, 8, 8) and [len(b[0]) for b in img.heldout] == [16, 8]
    assert img.augment(img.x_train, torch.Generator()).shape == (64, 1, 8, 8)
    assert pickle.loads(pickle.dumps(img)).augment == img.augment


def test_heldout_rules():
    assert load_dataset("synthetic", heldout=()).heldout == []
    assert len(load_dataset("synthetic", heldout=()).x_train) == 512
    assert len(load_dataset("synthetic", heldout=7).heldout[0][0]) == 7
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    rest, _, batches = carve_heldout(x, y, (3, 2), seed=0)
    used = torch.cat([rest[:, 0]] + [b[0][:, 0] for b in batches])
    assert sorted(used.tolist()) == list(range(10)) and len(rest) == 5
    assert torch.all(rest[1:, 0] > rest[:-1, 0])  # the remainder keeps its order
    with pytest.raises(DataError, match="need 10 examples"):
        carve_heldout(x, y, (10,), seed=0)
    with pytest.raises(DataError, match="positive"):
        carve_heldout(x, y, (0,), seed=0)
    with pytest.raises(DataError, match="digits has only 1500"):
        load_dataset("digits", heldout=(1500,))


def test_unknown_names_and_options():
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="unknown option.*n_train"):
        load_dataset("digits", n_train=3)
    assert load_dataset("Synthetic", heldout=()).name == "synthetic"
    assert DATASETS == (
        "fashion_mnist",
        "mnist",
        "cifar10",
        "cifar100",
        "digits",
        "mnist1d",
        "synthetic",
    )


def test_heldout_sizes_checked_before_loading():
    with pytest.raises(DataError, match="positive integers"):
        load_dataset("fashion_mnist", heldout=(-1,), root="/nonexistent", download=False)
    assert [len(b[0]) for b in load_dataset("synthetic", heldout=[100, 50]).heldout] == [100, 50]


def test_import_pulls_in_no_optional_dependency():
    import subprocess
    import sys

    code = (
        "import sys, sparseflow.data; "
        "bad = [m for m in ('sklearn', 'mnist1d', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_dataset_is_decoded_once_per_process(monkeypatch):
    """A sweep worker trains run after run on the same data: the files are decoded once."""
    import functools

    from sparseflow.data import registry

    calls = []
    original = registry._LOADERS["synthetic"]

    @functools.wraps(original)
    def counting(request, **kw):
        calls.append(kw)
        return original(request, **kw)

    monkeypatch.setitem(registry._LOADERS, "synthetic", counting)
    a = load_dataset("synthetic", heldout=64)
    assert load_dataset("synthetic", heldout=64) is a and len(calls) == 1
    b = load_dataset("synthetic", heldout=64, heldout_seed=3)  # another carve: read again
    assert len(calls) == 2 and not torch.equal(a.heldout[0][0], b.heldout[0][0])
    assert torch.equal(a.x_test, b.x_test)
    load_dataset("synthetic", heldout=64, n_train=500)  # other options: another dataset
    assert len(calls) == 3
    load_dataset("synthetic", heldout=64)  # evicted: two datasets are kept
    assert len(calls) == 4
    registry.clear_dataset_cache()
    load_dataset("synthetic", heldout=64, n_train=500)
    assert len(calls) == 5

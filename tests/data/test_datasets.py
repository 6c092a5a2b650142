"""Tests of the named data sets: bundled Old Faithful, MNIST (IDX + MD5) and binarized MNIST."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pytest
import torch

from pyrogen.data import (
    DATASETS,
    OLD_FAITHFUL_COLUMNS,
    binarized_mnist,
    download_mnist,
    load_dataset,
    mnist,
    old_faithful,
)

MNIST_GZ_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


# --- Old Faithful ----------------------------------------------------------------------------


def test_old_faithful_shape_and_means():
    data = old_faithful()
    assert data.shape == (272, 2)
    assert data.dtype == torch.float32
    means = data.double().mean(dim=0)
    assert means[0].item() == pytest.approx(3.487783, rel=1e-5)
    assert means[1].item() == pytest.approx(70.89706, rel=1e-5)
    assert torch.allclose(data[0], torch.tensor([3.6, 79.0]))
    assert OLD_FAITHFUL_COLUMNS == ("eruptions", "waiting")


def test_load_dataset_by_name():
    assert set(DATASETS) == {"old_faithful"}
    assert torch.equal(load_dataset("old_faithful"), old_faithful())


def test_load_dataset_unknown_name_lists_names():
    with pytest.raises(ValueError, match=r"name: expected one of 'old_faithful', got 'iris'"):
        load_dataset("iris")


# --- MNIST -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_cache() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Holds MNIST splits for the module: the train images take a second or two to load."""
    return {}


@pytest.fixture
def mnist_train(shared_data: Path, mnist_cache) -> tuple[torch.Tensor, torch.Tensor]:
    if "train" not in mnist_cache:
        mnist_cache["train"] = mnist(shared_data / "mnist", "train")
    return mnist_cache["train"]


def test_mnist_train(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60000, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (60000,)
    assert labels.dtype == torch.int64
    assert images.min().item() == 0.0
    assert images.max().item() == 1.0
    assert labels[0].item() == 5
    counts = torch.bincount(labels, minlength=10)
    assert counts.shape == (10,)
    assert counts.sum().item() == 60000
    assert bool((counts > 5000).all())


def test_mnist_test_split(shared_data):
    images, labels = mnist(shared_data / "mnist", split="test")
    assert images.shape == (10000, 28, 28)
    assert labels.shape == (10000,)
    assert torch.bincount(labels, minlength=10).sum().item() == 10000
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_mnist_unknown_split(tmp_path):
    with pytest.raises(ValueError, match=r"split: expected one of 'train', 'test', got 'valid'"):
        mnist(tmp_path, "valid")


def test_mnist_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere: expected a folder of MNIST files"):
        mnist(tmp_path / "nowhere")


def test_mnist_missing_file_suggests_download(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"t10k-images-idx3-ubyte\.gz: no such file; .*download_mnist"
    ):
        mnist(tmp_path, "test")


def _raw_test_split(shared_data: Path, folder: Path) -> Path:
    """Write the decompressed t10k files into folder (mnist accepts plain files too)."""
    for name in MNIST_GZ_FILES[2:]:
        raw = gzip.decompress((shared_data / "mnist" / name).read_bytes())
        (folder / name.removesuffix(".gz")).write_bytes(raw)
    return folder


def test_mnist_plain_files_match_gzip(shared_data, tmp_path):
    images, labels = mnist(_raw_test_split(shared_data, tmp_path), "test")
    reference_images, reference_labels = mnist(shared_data / "mnist", "test")
    assert torch.equal(images, reference_images)
    assert torch.equal(labels, reference_labels)


def test_mnist_corrupted_copy_fails_checksum(shared_data, tmp_path):
    labels_path = _raw_test_split(shared_data, tmp_path) / "t10k-labels-idx1-ubyte"
    data = bytearray(labels_path.read_bytes())
    data[100] ^= 0x01  # flip one bit of one label: still a valid IDX file
    labels_path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: MD5 checksum mismatch"):
        mnist(tmp_path, "test")


def test_download_mnist_from_file_url_then_skip(shared_data, tmp_path):
    root = tmp_path / "mnist"
    mirror = (shared_data / "mnist").as_uri()  # no trailing slash: download_mnist adds it
    assert download_mnist(root, base_url=mirror) == root
    assert sorted(path.name for path in root.iterdir()) == sorted(MNIST_GZ_FILES)
    for name in MNIST_GZ_FILES:
        assert (root / name).read_bytes() == (shared_data / "mnist" / name).read_bytes()
    before = {path.name: path.stat().st_mtime_ns for path in root.iterdir()}
    # Nothing is fetched again: an unreachable mirror does no harm.
    download_mnist(root, base_url=(tmp_path / "no-mirror").as_uri())
    assert {path.name: path.stat().st_mtime_ns for path in root.iterdir()} == before
    assert mnist(root, "test")[0].shape == (10000, 28, 28)


def test_download_mnist_keeps_a_corrupted_user_file(shared_data, tmp_path):
    root = _raw_test_split(shared_data, tmp_path)
    shutil.copy(shared_data / "mnist" / MNIST_GZ_FILES[0], root)
    shutil.copy(shared_data / "mnist" / MNIST_GZ_FILES[1], root)
    labels_path = root / "t10k-labels-idx1-ubyte"
    corrupted = bytearray(labels_path.read_bytes())
    corrupted[-1] ^= 0x01
    labels_path.write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match=r"MD5 checksum mismatch.*left untouched"):
        download_mnist(root, base_url=(tmp_path / "no-mirror").as_uri())
    assert labels_path.read_bytes() == bytes(corrupted)


def test_download_mnist_rejects_corrupt_mirror_leaving_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # A well-formed IDX file that is not the real MNIST train images.
    fake = struct.pack(">HBB3I", 0, 0x08, 3, 1, 28, 28) + bytes(784)
    (mirror / MNIST_GZ_FILES[0]).write_bytes(gzip.compress(fake))
    root = tmp_path / "root"
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte\.gz: downloaded file rejected: .*MD5"
    ):
        download_mnist(root, base_url=mirror.as_uri())
    assert list(root.iterdir()) == []


def test_download_mnist_missing_remote_file(tmp_path):
    with pytest.raises(OSError, match=r"train-images-idx3-ubyte\.gz: download failed"):
        download_mnist(tmp_path / "root", base_url=(tmp_path / "empty").as_uri())
    assert list((tmp_path / "root").iterdir()) == []


@pytest.mark.parametrize("url", ["ftp://example.com/mnist/", "example.com/mnist", "/data/mnist"])
def test_download_mnist_rejects_bad_urls(tmp_path, url):
    with pytest.raises(ValueError, match=r"base_url: expected an http://, https:// or file:// URL"):
        download_mnist(tmp_path, base_url=url)


# --- binarized MNIST -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split", "n_images"), [("train", 50000), ("valid", 10000), ("test", 10000)]
)
def test_binarized_mnist_shapes(shared_data, split, n_images):
    images = binarized_mnist(shared_data / "binarized_mnist", split)
    assert images.shape == (n_images, 784)
    assert images.dtype == torch.float32


def test_binarized_mnist_test_pixel_sum(shared_data):
    images = binarized_mnist(shared_data / "binarized_mnist", "test")
    assert images.sum(dtype=torch.float64).item() == 1_038_896
    assert set(images.unique().tolist()) == {0.0, 1.0}


def test_binarized_mnist_unknown_split(tmp_path):
    with pytest.raises(
        ValueError, match=r"split: expected one of 'train', 'valid', 'test', got 'val'"
    ):
        binarized_mnist(tmp_path, "val")


def test_binarized_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"binarized_mnist\.npz: no such file"):
        binarized_mnist(tmp_path)


def test_load_table_reads_a_file_or_the_bundled_old_faithful(tmp_path):
    from pyrogen.data import load_table

    x, source, names = load_table()
    assert x.shape == (272, 2) and source == "Old Faithful (bundled)"
    assert names == ["eruptions", "waiting"]
    waiting, _, names = load_table(columns="waiting,eruptions")
    assert names == ["waiting", "eruptions"] and torch.equal(waiting, x[:, [1, 0]])
    with pytest.raises(ValueError, match=r"columns: expected names .* unknown \['nope'\]"):
        load_table(columns="nope")
    with pytest.raises(ValueError, match="columns: expected each column once"):
        load_table(columns="waiting,waiting")
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    rows, source, names = load_table(path, "b")
    assert rows.tolist() == [[2.0], [4.0]] and source == str(path) and names == ["b"]

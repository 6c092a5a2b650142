"""Image data for training and scoring: data sets from a folder, arrays with labels, splits,
binarization (also as the ``epoch_transform`` of :func:`pyrogen.fit`) and label checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.data import (
    ImageSplit,
    as_rows,
    balanced_labels,
    binarization_mode,
    binarize,
    check_classes,
    check_unit_interval,
    condition_labels,
    count_classes,
    describe_binarization,
    describe_counts,
    dynamic_binarization,
    image_data_shape,
    image_likelihood,
    load_image_dataset,
    load_images,
    prepare_examples,
    read_images,
    read_labelled_array,
    semi_supervised_labels,
    split_train_test,
)


def test_dynamic_binarization_resamples_every_epoch():
    """Each epoch trains on a fresh Bernoulli sample of the grey images."""
    seen = []

    def recording(x, epoch, generator):
        rows = dynamic_binarization(x, epoch, generator)
        seen.append(rows.clone())
        return rows

    grey = torch.full((40, 16), 0.5)
    model = pyrogen.VAE((16,), latent_dim=2, hidden=(8,))
    result = pyrogen.fit(
        model, grey, steps=8, batch_size=10, seed=0, epoch_transform=recording, progress=False
    )
    assert result.steps == 8 and len(result.losses) == 8 and len(seen) == 2
    assert all(set(x.unique().tolist()) == {0.0, 1.0} for x in seen)
    assert not torch.equal(seen[0], seen[1])


def _vae() -> pyrogen.VAE:
    torch.manual_seed(3)  # the same initial weights
    return pyrogen.VAE((16,), latent_dim=2, hidden=(8,))


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_dynamic_binarization_of_binary_data_trains_as_without_it_and_resumes_exactly(tmp_path):
    """With data that sampling cannot change (0s and 1s), the fit with the transform equals
    one without it, step for step; one stopped and resumed from a checkpoint equals both."""
    binary = (torch.rand(40, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    options = {"batch_size": 16, "seed": 2, "progress": False}
    models = [_vae() for _ in range(3)]
    whole = pyrogen.fit(models[0], binary, steps=10, **options)
    sampled = pyrogen.fit(
        models[1], binary, steps=10, epoch_transform=dynamic_binarization, **options
    )
    assert sampled.losses == whole.losses
    _assert_same_state(models[0], models[1])

    checkpoint = tmp_path / "training.pt"
    resumable = {"epoch_transform": dynamic_binarization, "checkpoint": checkpoint, **options}
    pyrogen.fit(models[2], binary, steps=4, **resumable)
    resumed = pyrogen.fit(models[2], binary, steps=10, resume=True, **resumable)
    assert resumed.losses == whole.losses
    _assert_same_state(models[0], models[2])


def test_a_resumed_dynamic_binarization_draws_the_same_samples(tmp_path):
    seen: dict[str, list[torch.Tensor]] = {"whole": [], "resumed": []}

    def recorder(key):
        def record(x, epoch, generator):
            rows = dynamic_binarization(x, epoch, generator)
            seen[key].append(rows.clone())
            return rows

        return record

    grey = torch.full((20, 16), 0.5)
    options = {"batch_size": 10, "seed": 1, "progress": False}
    pyrogen.fit(_vae(), grey, steps=6, epoch_transform=recorder("whole"), **options)
    model, checkpoint = _vae(), tmp_path / "training.pt"
    pyrogen.fit(model, grey, steps=2, checkpoint=checkpoint, epoch_transform=recorder("resumed"),
                **options)  # fmt: skip
    pyrogen.fit(model, grey, steps=6, checkpoint=checkpoint, resume=True,
                epoch_transform=recorder("resumed"), **options)  # fmt: skip
    assert len(seen["whole"]) == len(seen["resumed"]) == 3
    for a, b in zip(seen["whole"], seen["resumed"], strict=True):
        assert torch.equal(a, b)


def test_binarize_modes():
    x = torch.tensor([[0.2, 0.5, 0.9]])
    assert binarize(x, "none") is x
    assert binarize(x, "threshold").tolist() == [[0.0, 0.0, 1.0]]
    sample = binarize(torch.full((50, 20), 0.5), "dynamic", seed=3)
    assert torch.equal(sample, binarize(torch.full((50, 20), 0.5), "dynamic", seed=3))
    assert set(sample.unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="binarize: expected one of"):
        binarize(x, "banana")
    assert binarization_mode(None, "mnist", "bernoulli") == "dynamic"
    assert binarization_mode(None, "mnist", "gaussian") == "none"
    assert binarization_mode(None, None, "bernoulli") == "none"
    assert binarization_mode("threshold", "mnist", "bernoulli") == "threshold"
    assert binarization_mode(None, "binarized-mnist", "bernoulli") == "none"
    with pytest.raises(ValueError, match="binarize: expected none for dataset='binarized-mnist'"):
        binarization_mode("dynamic", "binarized-mnist", "bernoulli")
    grey = describe_binarization("none", seed=0, likelihood="bernoulli", x=x)
    assert "binary cross-entropy" in grey
    assert "seed 4" in describe_binarization("dynamic", seed=4, likelihood="bernoulli", x=x)


def test_split_train_test_is_seeded_and_holds_out_a_tenth():
    x, y = torch.arange(120.0).reshape(120, 1), torch.arange(120) % 3
    split = split_train_test(x, y, seed=0, source="images.npy")
    assert split.train.shape[0] == 108 and split.test.shape[0] == 12
    assert "split at random (seed 0) into 108 training and 12 test rows" in split.description
    assert torch.equal(split.train_labels, split.train[:, 0].long() % 3)
    again = split_train_test(x, y, seed=0)
    assert torch.equal(again.test, split.test)
    assert not torch.equal(split_train_test(x, y, seed=1).test, split.test)
    with pytest.raises(ValueError, match="expected at least 2 rows"):
        split_train_test(x[:1], seed=0)


def test_read_labelled_array_from_an_npz_or_a_labels_file(tmp_path):
    images, labels = np.zeros((6, 2, 2), np.float32), np.array([0, 1, 2, 0, 1, 2])
    npz = tmp_path / "classes.npz"
    np.savez(npz, x=images, y=labels)
    x, y, source = read_labelled_array(npz)
    assert x.shape == (6, 2, 2) and y.tolist() == labels.tolist()
    assert source == f"{npz}['y']"
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    x, y, source = read_labelled_array(tmp_path / "images.npy", labels=str(tmp_path / "labels.npy"))
    assert y.dtype == torch.int64 and source == str(tmp_path / "labels.npy")
    assert read_labelled_array(tmp_path / "images.npy")[1:] == (None, None)
    with pytest.raises(ValueError, match=r"labels: expected a labels file or an array of .*"):
        read_labelled_array(npz, labels="nope")
    np.save(tmp_path / "short.npy", labels[:2])
    with pytest.raises(ValueError, match="expected 6 labels, one per row of .*images.npy, got 2"):
        read_labelled_array(tmp_path / "images.npy", labels=str(tmp_path / "short.npy"))
    np.save(tmp_path / "halves.npy", labels + 0.5)
    with pytest.raises(ValueError, match="expected integer class labels, got 0.5 at row 0"):
        read_labelled_array(tmp_path / "images.npy", labels=str(tmp_path / "halves.npy"))
    np.savez(tmp_path / "odd.npz", a=images, b=images, c=labels)
    with pytest.raises(ValueError, match="data: expected an NPZ archive holding the images"):
        read_labelled_array(tmp_path / "odd.npz")


def test_class_counts_and_checks():
    labels = torch.tensor([0, 1, 2, 2])
    assert count_classes([labels, None], "y") == 3
    assert count_classes([labels], "y", num_classes=5) == 5
    with pytest.raises(ValueError, match=r"y: expected labels in 0..1 \(--num-classes 2\), got 2"):
        count_classes([labels], "y", num_classes=2)
    with pytest.raises(ValueError, match="expected labels of at least 2 classes"):
        count_classes([torch.zeros(3, dtype=torch.long)], "y")


def test_class_count_from_the_labels_needs_every_class_present():
    message = r"y: expected labels of every class 0..200 .*got none of 200 of them \(0, 1, 2, 3"
    with pytest.raises(ValueError, match=message + r", 4, \.\.\.\); give --num-classes"):
        count_classes([torch.full((4,), 200)], "y")
    with pytest.raises(ValueError, match=r"of 1 of them \(1\)"):
        count_classes([torch.tensor([0, 2, -1]), None], "y")
    assert count_classes([torch.full((4,), 200)], "y", num_classes=201) == 201
    with pytest.raises(ValueError, match=r"y: expected labels in 0..2, got -1 in 1 row\(s\)"):
        check_classes(torch.tensor([0, -1]), 3, "y")
    assert check_classes(torch.tensor([0, -1]), 3, "y", unlabelled=True).tolist() == [0, -1]


def test_balanced_labels():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    kept, counts = balanced_labels(labels, 12, 3, seed=0)
    assert counts == [5, 5, 2]  # class 2 has only 2 rows: the others share the rest
    assert int((kept >= 0).sum()) == 12 and bool((kept[kept >= 0] == labels[kept >= 0]).all())
    _, counts = balanced_labels(labels, 4, 3, seed=1)
    assert sorted(counts) == [1, 1, 2]
    smaller, _ = balanced_labels(labels, 3, 3, seed=0)
    assert bool((kept[smaller >= 0] >= 0).all())  # with one seed, the sets are nested
    assert describe_counts([5, 5, 2]) == "2 to 5 per class" and describe_counts([3, 3]) == (
        "3 per class"
    )
    with pytest.raises(ValueError, match=r"labelled: expected at most 22 \(the training rows"):
        balanced_labels(labels, 100, 3, seed=0)


def test_shapes_for_the_networks():
    assert image_data_shape((28, 28), "mlp") == (784,)
    assert image_data_shape((28, 28), "conv") == (1, 28, 28)
    assert image_data_shape((3, 8, 8), "conv") == (3, 8, 8)
    with pytest.raises(ValueError, match=r"encoder: expected images, .* got examples of shape"):
        image_data_shape((5,), "conv")
    assert as_rows(torch.zeros(4, 8, 8), (1, 8, 8)).shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"t.npy: expected examples of shape \(1, 8, 8\)"):
        as_rows(torch.zeros(4, 5), (1, 8, 8), "t.npy")


def test_load_image_dataset_from_the_shared_folder(shared_data):
    split = load_image_dataset(shared_data / "mnist")
    assert split.train.shape == (60_000, 28, 28) and split.test.shape == (10_000, 28, 28)
    assert split.train_labels.shape == (60_000,) and split.test_labels.max() == 9
    assert "train split (60000 rows) for training, test split (10000 rows)" in split.description
    test_only = load_image_dataset(shared_data / "mnist", train=False)
    assert test_only.train is None and test_only.dataset == "mnist"
    with pytest.raises(FileNotFoundError):
        load_image_dataset(shared_data / "nowhere")


def test_load_images_from_a_file_or_a_folder(tmp_path, shared_data):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).random((30, 4, 4), dtype=np.float32))
    split = load_images(path, split_seed=0)
    assert split.train.shape == (27, 4, 4) and split.test.shape == (3, 4, 4)
    every = load_images(path)
    assert every.train is None and every.test.shape == (30, 4, 4)
    assert every.description == f"{path}, all 30 rows"
    for kwargs, message in [
        ({"data": path, "data_dir": tmp_path}, "data, data_dir: expected one of them, got both"),
        ({}, "data_dir, data: expected one of them"),
        ({"data": path, "dataset": "mnist"}, "dataset: expected data_dir with it"),
        ({"data_dir": tmp_path, "labels": "y"}, "labels: expected none with data_dir"),
        ({"data_dir": tmp_path}, "data_dir: expected the mnist files in"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_images(**kwargs)
    mnist_test = load_images(data_dir=shared_data / "mnist")
    assert mnist_test.train is None and mnist_test.test_labels.shape == (10_000,)


def test_check_unit_interval():
    grey = torch.tensor([[0.0, 255.0]])
    check_unit_interval([grey], "x", "none", "gaussian")  # nothing to check
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\] for binarization"):
        check_unit_interval([grey, None], "x", "threshold", "gaussian")
    with pytest.raises(ValueError, match="for a bernoulli likelihood, got values in"):
        check_unit_interval([grey], "x", "none", "bernoulli")


def test_condition_labels_count_and_check_both_splits():
    split = ImageSplit(None, torch.zeros(3, 2), torch.tensor([0, 2]), torch.tensor([1, 1]))
    classes, train, test = condition_labels(split)
    assert classes == 3 and train.tolist() == [0, 2] and test.tolist() == [1, 1]
    assert condition_labels(split, 5)[0] == 5
    named = ImageSplit(None, torch.zeros(2, 2), torch.tensor([0, -1]), None, labels_source="y")
    with pytest.raises(ValueError, match=r"y: expected labels in 0..1, got -1 in 1 row\(s\)"):
        condition_labels(named, 2)
    classes, train, test = condition_labels(named, 2, unlabelled=True)
    assert (classes, train.tolist(), test) == (2, [0, -1], None)


def test_semi_supervised_labels_and_their_description():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 2)
    kept, how = semi_supervised_labels(labels, 3, 12, seed=0)
    assert torch.equal(kept, balanced_labels(labels, 12, 3, seed=0)[0])
    assert how == (
        "12 of the 22 training rows keep their labels (2 to 5 per class, chosen at random "
        "with seed 0); the other 10 are unlabelled"
    )
    partly = torch.tensor([0, -1, 1, -1])
    assert semi_supervised_labels(partly, 2)[1] == "2 of the 4 training rows labelled"
    every, how = semi_supervised_labels(labels, 3)
    assert every is labels
    assert (
        how == "22 of the 22 training rows labelled (all of them: supervised; --labelled N keeps N)"
    )
    with pytest.raises(ValueError, match=r"labelled: expected at most 22 \(the training rows"):
        semi_supervised_labels(labels, 3, 100)
    with pytest.raises(
        ValueError,
        match=r"y.npy: expected some labelled training rows \(labels >= 0\), got none of 2",
    ):
        semi_supervised_labels(torch.tensor([-1, -1]), 2, source="y.npy")


def test_image_likelihood_defaults_from_the_data():
    assert image_likelihood("mnist") == "discretized"
    assert image_likelihood("binarized-mnist") == "bernoulli"
    assert image_likelihood(None) == "gaussian" and image_likelihood(None, "none") == "gaussian"
    assert image_likelihood("mnist", "dynamic") == "bernoulli"
    assert image_likelihood(None, "threshold") == "bernoulli"
    assert image_likelihood("mnist", likelihood="gaussian") == "gaussian"
    with pytest.raises(
        ValueError,
        match=r"^binarize: dynamic gives 0/1 data, for likelihood='bernoulli'; got gaussian$",
    ):
        image_likelihood("mnist", "dynamic", "gaussian")


def test_read_images_and_prepare_examples_like_a_run(tmp_path):
    path = tmp_path / "images.npz"
    x = np.random.default_rng(0).random((10, 2, 2), dtype=np.float32)
    np.savez(path, x=x, y=np.arange(10) % 2)
    split, mode, source = read_images(path, binarize="dynamic", likelihood="bernoulli")
    assert (mode, source, split.train) == ("dynamic", str(path), None)
    examples = prepare_examples(
        split, mode, source, data_shape=(4,), seed=3, likelihood="bernoulli"
    )
    assert torch.equal(examples.x, binarize(split.test, "dynamic", seed=3).reshape(10, 4))
    assert examples.labels.tolist() == [0, 1] * 5 and examples.binarize == "dynamic"
    assert (
        examples.description == split.description and examples.labels_source == split.labels_source
    )
    assert examples.preprocessing == describe_binarization(
        "dynamic", seed=3, likelihood="bernoulli", x=examples.x
    )
    with pytest.raises(ValueError, match=r"expected examples of shape \(5,\)"):
        prepare_examples(split, mode, source, data_shape=(5,))
    np.save(tmp_path / "grey.npy", x * 255)
    with pytest.raises(ValueError, match=r"grey.npy: expected values in \[0, 1\] for binarization"):
        read_images(tmp_path / "grey.npy", binarize="threshold")
    with pytest.raises(ValueError, match="binarize: expected none for dataset='binarized-mnist'"):
        read_images(path, dataset="binarized-mnist", binarize="dynamic")


def test_key_names_the_examples_of_an_archive_of_several(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, first=np.zeros((4, 2, 2)), second=np.ones((3, 5)), y=np.array([0, 1, 1, 0]))
    x, y, source = read_labelled_array(path, key="first")
    assert tuple(x.shape) == (4, 2, 2) and y.tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="name the images' array with key='NAME'"):
        read_labelled_array(path)

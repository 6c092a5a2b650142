"""The training loop's hooks, ``epoch_transform`` and the metrics logger."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

import pyrogen
from pyrogen.infer import Callback, FitConfig, MetricsLogger
from pyrogen.infer.fit_options import TrainingData
from pyrogen.models.gmm import GaussianMixture
from pyrogen.nn.optim import adam


def rows(n: int = 100, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 2)), dtype=torch.float32)


def jitter(x: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch transform that draws: each epoch's rows get their own small noise."""
    return x + 0.1 * torch.randn(x.shape, generator=generator, dtype=x.dtype)


class Recorder(Callback):
    """Every hook call, as (hook, argument)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_fit_start(self, loop):
        self.calls.append(("fit_start", loop.state.step))

    def on_epoch_start(self, loop, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_loss(self, loop, loss):
        self.calls.append(("loss", loop.state.step))

    def on_epoch_end(self, loop, epoch):
        self.calls.append(("epoch_end", epoch))

    def on_validation_end(self, loop, loss):
        self.calls.append(("validation_end", loop.state.step))

    def on_step_end(self, loop, loss):
        self.calls.append(("step_end", loop.state.step))

    def on_fit_end(self, loop):
        self.calls.append(("fit_end", loop.state.step))

    def on_exception(self, loop, error):
        self.calls.append(("exception", type(error).__name__))


# --- hooks ------------------------------------------------------------------------------------
def test_hooks_run_in_their_documented_order():
    recorder = Recorder()
    pyrogen.fit(
        GaussianMixture(2),
        rows(10),
        steps=4,
        batch_size=5,  # 2 steps per epoch
        validation=rows(6, seed=1),
        early_stopping=None,
        callbacks=[recorder],
        progress=False,
    )
    epoch = [("loss", 0), ("step_end", 1), ("loss", 1), ("epoch_end", 0)]
    expected = [("fit_start", 0), ("epoch_start", 0), *epoch, ("validation_end", 2)]
    expected += [("step_end", 2), ("epoch_start", 1), ("loss", 2), ("step_end", 3)]
    expected += [("loss", 3), ("epoch_end", 1), ("validation_end", 4), ("step_end", 4)]
    assert recorder.calls == [*expected, ("fit_end", 4)]


def test_a_callback_object_can_stop_training():
    class StopAtThree(Callback):
        def on_step_end(self, loop, loss):
            if loop.state.step == 3:
                loop.request_stop()

    result = pyrogen.fit(
        GaussianMixture(2), rows(), steps=50, callbacks=[StopAtThree()], early_stopping=None
    )
    assert result.steps == 3 and result.stopped_early


def test_callbacks_hear_of_a_failure():
    recorder = Recorder()

    def poison(step, loss, model):
        if step == 2:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(FloatingPointError, match="step 2"):
        pyrogen.fit(  # early_stopping=None: the MAP-EM mode's check would end at step 1
            GaussianMixture(2),
            rows(),
            steps=5,
            callbacks=[poison, recorder],
            progress=False,
            early_stopping=None,
        )
    assert recorder.calls[-1] == ("exception", "FloatingPointError")


def test_objects_with_hook_methods_of_their_own_are_callbacks():
    class Counter:  # no subclass of Callback
        steps = 0

        def on_step_end(self, loop, loss):
            self.steps += 1

    counter = Counter()
    pyrogen.fit(GaussianMixture(2), rows(), steps=4, callbacks=[counter], early_stopping=None)
    assert counter.steps == 4


def test_options_are_checked_once_into_a_frozen_config():
    data = TrainingData.from_arguments(rows(), None, None, None)
    config = FitConfig.from_options(GaussianMixture(2), data, {"epochs": 2, "batch_size": 30})
    assert (config.steps_per_epoch, config.steps, config.batch_size) == (4, 8, 30)
    assert config.lr > 0 and config.optim is adam and config.world_size == 1
    # None is the family's default, except for early_stopping, where it is "never".
    vae, many = pyrogen.VAE((2,), latent_dim=1, hidden=(4,)), TrainingData(rows(300))
    unset = {"batch_size": None, "micro_batch_size": None, "lr": None, "steps": None}
    config = FitConfig.from_options(vae, many, unset)
    defaults = vae.fit_defaults
    assert (config.batch_size, config.lr, config.steps) == (128, defaults["lr"], defaults["steps"])
    gmm_default = GaussianMixture(2).fit_defaults["early_stopping"]
    assert FitConfig.from_options(GaussianMixture(2), data, {}).early_stopping == gmm_default
    no_stop = FitConfig.from_options(GaussianMixture(2), data, {"early_stopping": None})
    assert gmm_default is not None and no_stop.early_stopping is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'stpes'"):
        pyrogen.fit(GaussianMixture(2), rows(), stpes=3)
    with pytest.raises(ValueError, match="callbacks: expected Callback objects or functions"):
        pyrogen.fit(GaussianMixture(2), rows(), steps=3, callbacks=[3])


# --- epoch_transform --------------------------------------------------------------------------
def test_epoch_transform_is_called_once_per_epoch_on_the_original_rows():
    x, calls = rows(), []

    def transform(data, epoch, generator):
        calls.append((epoch, data))
        return jitter(data, epoch, generator)

    options = dict(epoch_transform=transform, early_stopping=None, progress=False)
    result = pyrogen.fit(GaussianMixture(2), x, epochs=3, batch_size=30, **options)
    assert result.steps == 12  # 4 steps an epoch
    assert [epoch for epoch, _ in calls] == [0, 1, 2]
    assert all(torch.equal(data, x) for _, data in calls)  # never an earlier epoch's output

    calls.clear()  # full-batch, every step is an epoch
    pyrogen.fit(GaussianMixture(2), x, steps=3, **options)
    assert [epoch for epoch, _ in calls] == [0, 1, 2]


def test_epoch_transform_changes_what_is_trained_on_reproducibly_from_the_seed():
    x = rows()
    options = dict(epochs=2, batch_size=30, lr=0.05, progress=False, early_stopping=None)
    plain = pyrogen.fit(GaussianMixture(2), x, **options)
    first = pyrogen.fit(GaussianMixture(2), x, epoch_transform=jitter, seed=1, **options)
    again = pyrogen.fit(GaussianMixture(2), x, epoch_transform=jitter, seed=1, **options)
    other = pyrogen.fit(GaussianMixture(2), x, epoch_transform=jitter, seed=2, **options)
    assert first.losses == again.losses
    assert first.losses != plain.losses and first.losses != other.losses


@pytest.mark.parametrize("batch_size", [None, 30])
def test_resume_with_an_epoch_transform_continues_exactly(tmp_path, batch_size):
    x, path = rows(), tmp_path / "run.ckpt"
    options = dict(batch_size=batch_size, lr=0.05, seed=4, progress=False, early_stopping=None)
    options.update(epoch_transform=jitter, restore_best=False)
    straight = GaussianMixture(2, inference="variational")
    pyrogen.fit(straight, x, steps=10, **options)
    # Interrupted in the middle of the second epoch (4 steps an epoch), then resumed.
    pyrogen.fit(GaussianMixture(2, inference="variational"), x, steps=6, checkpoint=path, **options)
    resumed = GaussianMixture(2, inference="variational")
    result = pyrogen.fit(resumed, x, steps=10, checkpoint=path, resume=True, **options)
    assert result.steps == 10
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda x, epoch, g: x[:-1], r"epoch_transform: expected a tensor of the data's shape"),
        (lambda x, epoch, g: x.numpy(), r"epoch_transform: expected a tensor .* got <class"),
        ("bernoulli", "epoch_transform: expected a function"),
    ],
)
def test_a_bad_epoch_transform_is_named(transform, message):
    with pytest.raises(ValueError, match=message):
        pyrogen.fit(GaussianMixture(2), rows(), steps=2, epoch_transform=transform, progress=False)


def test_dynamic_binarization_trains_on_a_new_binary_draw_every_epoch():
    grey, seen = torch.rand(40, 4), []

    def binarize(x, epoch, generator):
        seen.append(pyrogen.data.dynamic_binarization(x, epoch, generator))
        return seen[-1]

    vae = pyrogen.VAE((4,), latent_dim=2, hidden=(8,))
    pyrogen.fit(vae, grey, epochs=2, batch_size=20, epoch_transform=binarize, progress=False)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    assert all(set(draw.unique().tolist()) <= {0.0, 1.0} for draw in seen)


# --- MetricsLogger --------------------------------------------------------------------------
def read_metrics(folder) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_metrics_csv_holds_every_step(tmp_path):
    x, held_out = rows(), rows(20, seed=1)
    result = pyrogen.fit(
        GaussianMixture(2),
        x,
        steps=8,
        batch_size=50,  # 2 steps an epoch
        lr=0.02,
        validation=held_out,
        early_stopping=None,
        callbacks=[MetricsLogger(tmp_path)],
        progress=False,
    )
    table = read_metrics(tmp_path)
    assert list(table[0]) == list(MetricsLogger.COLUMNS)
    assert [int(row["step"]) for row in table] == list(range(1, 9))
    assert [int(row["epoch"]) for row in table] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [float(row["loss"]) for row in table] == result.losses  # written exactly
    validation = [(int(r["step"]), float(r["validation_loss"])) for r in table[1::2]]
    assert validation == result.validation_losses
    assert all(row["validation_loss"] == "" for row in table[::2])
    assert all(float(row["lr"]) == 0.02 for row in table)
    times = [float(row["wall_time"]) for row in table]
    assert times == sorted(times)


def test_metrics_of_a_resumed_run_continue_the_file(tmp_path):
    x, path, folder = rows(), tmp_path / "run.ckpt", tmp_path / "metrics"
    options = dict(lr=0.02, early_stopping=None, progress=False, checkpoint=path)
    pyrogen.fit(GaussianMixture(2), x, steps=3, callbacks=[MetricsLogger(folder)], **options)
    result = pyrogen.fit(
        GaussianMixture(2), x, steps=6, resume=True, callbacks=[MetricsLogger(folder)], **options
    )
    table = read_metrics(folder)
    assert [int(row["step"]) for row in table] == list(range(1, 7))
    assert [float(row["loss"]) for row in table] == result.losses


class FakeWriter:
    """Stands in for ``torch.utils.tensorboard.SummaryWriter``."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True


def test_tensorboard_gets_the_scalars_when_it_can_be_imported(monkeypatch, tmp_path):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeWriter.made.clear()
    result = pyrogen.fit(
        GaussianMixture(2),
        rows(),
        steps=3,
        validation=rows(20, seed=1),
        callbacks=[MetricsLogger(tmp_path)],
        progress=False,
    )
    (writer,) = FakeWriter.made
    assert writer.log_dir == str(tmp_path) and writer.closed
    losses = [(step, value) for tag, value, step in writer.scalars if tag == "loss"]
    assert losses == list(enumerate(result.losses, start=1))
    validation = [(step, value) for tag, value, step in writer.scalars if tag == "validation_loss"]
    assert validation == result.validation_losses
    assert {tag for tag, _, _ in writer.scalars} == {"loss", "validation_loss", "lr"}


def test_without_tensorboard_only_the_csv_is_written(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    pyrogen.fit(
        GaussianMixture(2), rows(), steps=2, callbacks=[MetricsLogger(tmp_path)], progress=False
    )
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed"
)
def test_tensorboard_event_files_are_written(tmp_path):
    pyrogen.fit(
        GaussianMixture(2), rows(), steps=2, callbacks=[MetricsLogger(tmp_path)], progress=False
    )
    assert any(path.name.startswith("events.out.tfevents") for path in tmp_path.iterdir())


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_a_signal_ends_training_after_the_step_with_its_state_saved(tmp_path, how):
    """Ctrl-C or SIGTERM mid-training: the step completes, the checkpoint holds it, the
    handlers are put back, and resuming gives the uninterrupted run's bits."""
    import os
    import signal

    from pyrogen.infer import TrainingInterrupted

    x = torch.randn(90, 3, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "ck.pt"
    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}

    def send(step, loss, model):
        if step == 4:
            os.kill(os.getpid(), getattr(signal, how))

    options = {"steps": 12, "batch_size": 20, "progress": False}
    with pytest.raises(TrainingInterrupted) as stopped:
        pyrogen.fit(_vae(), x, checkpoint=path, callbacks=[send], **options)
    assert (stopped.value.step, stopped.value.signal_name) == (4, how)
    assert torch.load(path, weights_only=True)["step"] == 4
    assert {name: signal.getsignal(getattr(signal, name)) for name in before} == before
    resumed, whole = _vae(), _vae()
    pyrogen.fit(resumed, x, checkpoint=path, resume=True, **options)
    pyrogen.fit(whole, x, **options)
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def _vae():
    return pyrogen.VAE(data_shape=(3,), latent_dim=2, likelihood="gaussian", hidden=(8,))

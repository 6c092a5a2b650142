"""Data-parallel training in 2 CPU processes (gloo) against one process on the same batches.

The runs are in float64, so that the only difference between the two, the order in which
the processes' gradient sums are added, is of the order of float64 rounding (1e-16 relative
per step); a tolerance of 1e-9 after a few Adam steps leaves six orders of magnitude for
Adam's normalisation of small gradients to amplify it and still fails on any real mistake
(a loss scaled by the local instead of the global batch is off by a factor of 2).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyrogen
from pyrogen.infer import MetricsLogger, distributed
from pyrogen.infer.distributed import Cluster

RTOL = 1e-9


def two_moons(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * torch.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    x = torch.where(upper[:, None], x, torch.tensor([1.0, 0.5], dtype=torch.float64) - x)
    return x + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def flow() -> pyrogen.FlowDensity:
    torch.manual_seed(3)
    return pyrogen.FlowDensity((2,), transforms=2, hidden=(16, 16)).double()


def mixture() -> pyrogen.GaussianMixture:
    return pyrogen.GaussianMixture(3)


def vae() -> pyrogen.VAE:
    torch.manual_seed(3)
    return pyrogen.VAE((2,), latent_dim=2, likelihood="gaussian", hidden=(16,)).double()


def assert_same_training(one: pyrogen.FitResult, two: pyrogen.FitResult) -> None:
    assert two.world_size == 2 and one.world_size == 1
    assert two.steps == one.steps
    torch.testing.assert_close(
        torch.tensor(two.losses), torch.tensor(one.losses), rtol=RTOL, atol=0
    )
    for (name, a), b in zip(
        one.model.state_dict().items(), two.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=1e-12, msg=name)


# N = 203 rows in batches of 50: the last batch of every epoch has 3 rows, which 2 processes
# split 2 + 1, so the weighting of unequal shares is exercised; full-batch, 203 = 102 + 101.
@pytest.mark.parametrize(
    "make, batch_size, micro_batch_size",
    [(flow, 50, None), (mixture, None, None), (mixture, 50, None), (mixture, None, 16)],
    ids=["flow-minibatch", "mixture-full-batch", "mixture-minibatch", "mixture-micro-batches"],
)
def test_two_processes_train_as_one_on_the_same_global_batches(make, batch_size, micro_batch_size):
    x = two_moons(203)
    options = dict(steps=9, batch_size=batch_size, lr=0.01, progress=False)
    one = pyrogen.fit(make(), x, **options, micro_batch_size=len(x))  # all rows at once
    # Each process scores its 102 or 101 rows in pieces of at most 16 when asked.
    two = pyrogen.fit(
        make(), x, **options, strategy="ddp", devices=2, micro_batch_size=micro_batch_size
    )
    assert_same_training(one, two)


@pytest.mark.parametrize("make, batch_size", [(flow, 50), (mixture, None), (vae, 50)])
def test_micro_batches_add_up_to_the_batch(make, batch_size):
    x = two_moons(203)
    options = dict(steps=6, batch_size=batch_size, lr=0.01, progress=False)
    whole = pyrogen.fit(make(), x, **options, micro_batch_size=len(x))
    pieces = pyrogen.fit(make(), x, **options, micro_batch_size=7)  # 50 = 7 x 7 + 1
    torch.testing.assert_close(
        torch.tensor(pieces.losses), torch.tensor(whole.losses), rtol=RTOL, atol=0
    )
    for (name, a), b in zip(
        whole.model.state_dict().items(), pieces.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=1e-12, msg=name)


def test_validation_is_scored_in_shares_and_early_stopping_agrees():
    x, held_out = two_moons(203), two_moons(31, seed=1)  # 31 rows: shares of 16 and 15
    options = dict(steps=12, batch_size=50, lr=0.05, validation=held_out, early_stopping=1)
    one = pyrogen.fit(flow(), x, progress=False, **options)
    two = pyrogen.fit(flow(), x, progress=False, devices=2, **options)  # auto -> ddp
    assert_same_training(one, two)
    assert len(two.validation_losses) == len(one.validation_losses) >= 2
    for (step_1, loss_1), (step_2, loss_2) in zip(
        one.validation_losses, two.validation_losses, strict=True
    ):
        assert step_1 == step_2 and loss_2 == pytest.approx(loss_1, rel=RTOL)
    assert (two.best_step, two.stopped_early) == (one.best_step, one.stopped_early)


def variational_mixture() -> pyrogen.GaussianMixture:
    return pyrogen.GaussianMixture(3, inference="variational").double()


# Stochastic objectives: a VAE's reparameterized z per row, a variational mixture's global
# draws. Each row's noise is the one a single process scoring the whole batch draws, so two
# processes, each in pieces of 16 rows, train exactly as one process does.
@pytest.mark.parametrize(
    "make, batch_size", [(vae, 50), (variational_mixture, None)], ids=["vae", "mixture"]
)
def test_stochastic_objectives_train_as_one_process(make, batch_size):
    x = two_moons(203)
    options = dict(steps=7, batch_size=batch_size, lr=0.01, progress=False)
    one = pyrogen.fit(make(), x, **options)
    two = pyrogen.fit(make(), x, **options, devices=2, micro_batch_size=16)
    assert_same_training(one, two)


def test_resume_with_two_processes_continues_exactly(tmp_path):
    x, path = two_moons(203), tmp_path / "training.pt"
    options = dict(batch_size=50, lr=0.01, progress=False, devices=2)
    straight = pyrogen.fit(vae(), x, steps=8, **options)
    pyrogen.fit(vae(), x, steps=4, checkpoint=path, **options)
    resumed = pyrogen.fit(vae(), x, steps=8, checkpoint=path, resume=True, **options)
    assert resumed.losses == straight.losses  # the noise streams of both processes resumed


def jitter(x: torch.Tensor, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """An epoch transform that draws (module-level, so that it pickles)."""
    return x + 0.01 * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def test_an_epoch_transform_draws_the_same_rows_in_every_process():
    x = two_moons(203)
    options = dict(steps=8, batch_size=50, lr=0.01, progress=False, epoch_transform=jitter)
    one = pyrogen.fit(flow(), x, **options)
    two = pyrogen.fit(flow(), x, **options, devices=2, micro_batch_size=16)
    assert_same_training(one, two)
    plain = pyrogen.fit(flow(), x, **{**options, "epoch_transform": None})
    assert plain.losses[4:] != one.losses[4:]  # the transform was applied


def test_metrics_are_written_once_by_the_first_process(tmp_path):
    result = pyrogen.fit(
        mixture(),
        two_moons(100),
        steps=4,
        devices=2,
        early_stopping=None,
        callbacks=[MetricsLogger(tmp_path)],
        progress=False,
    )
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in table] == [1, 2, 3, 4]
    assert [float(row["loss"]) for row in table] == result.losses


def stop_at_step_3(step: int, loss: float, model: pyrogen.GenerativeModel) -> bool:
    return step == 3


def test_a_callback_in_the_first_process_stops_all_of_them():
    result = pyrogen.fit(
        mixture(),
        two_moons(100),
        steps=10,
        devices=2,
        callbacks=[stop_at_step_3],
        early_stopping=None,  # the mixture's own patience could stop it first
        progress=False,
    )
    assert result.steps == 3 and result.stopped_early


def test_unpicklable_callbacks_are_named():
    with pytest.raises(ValueError, match="devices: .*pickle"):
        pyrogen.fit(mixture(), two_moons(50), steps=2, devices=2, callbacks=[lambda *a: None])
    with pytest.raises(ValueError, match="devices: .*epoch_transform.* does not pickle"):
        pyrogen.fit(mixture(), two_moons(50), steps=2, devices=2, epoch_transform=lambda *a: a[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "fsdp"}, "strategy: expected one of 'auto', 'ddp', got 'fsdp'"),
        ({"devices": 0}, "devices: expected a positive integer, got 0"),
        ({"micro_batch_size": 0}, "micro_batch_size: expected a positive integer, got 0"),
        ({"num_nodes": 2}, "num_nodes=2: set MASTER_ADDR, MASTER_PORT, NODE_RANK"),
        ({"devices": 2, "device": "cuda"}, "device: expected an available device"),
    ],
)
def test_bad_scale_out_arguments(kwargs, message, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match=message):
        pyrogen.fit(mixture(), two_moons(50), steps=2, **kwargs)


@pytest.mark.parametrize("rows", [0, 1, 2, 5, 203])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_cover_the_rows_once_and_weights_average_to_one(rows, world_size):
    places = [Cluster(rank=r, world_size=world_size) for r in range(world_size)]
    covered = [i for where in places for i in range(rows)[distributed.shard(rows, where)]]
    assert covered == list(range(rows))
    if rows:
        sizes = [len(range(rows)[distributed.shard(rows, where)]) for where in places]
        weights = [distributed.shard_weight(n, rows, w) for n, w in zip(sizes, places, strict=True)]
        assert sum(weights) / world_size == pytest.approx(1.0)
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.cuda
def test_two_gpus_train_as_one():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    x = two_moons(203)
    options = dict(steps=5, batch_size=50, lr=0.01, progress=False, device="cuda")
    one = pyrogen.fit(flow(), x, **options)
    two = pyrogen.fit(flow(), x, **options, devices=2)
    assert two.model.device.type == "cuda"
    # cuDNN/cuBLAS reductions may differ in order between devices: float64 rounding still.
    assert_same_training(one, two)


TORCHRUN_SCRIPT = """
import json, sys
import torch
import pyrogen
sys.path.insert(0, {tests!r})
from test_distributed import flow, two_moons

result = pyrogen.fit(flow(), two_moons(203), steps=6, batch_size=50, lr=0.01, progress=False,
                     strategy="ddp", devices=2)
rank = torch.distributed.get_rank()
with open({out!r} + str(rank), "w") as handle:
    json.dump({{"losses": result.losses, "world_size": result.world_size}}, handle)
"""


def test_processes_started_by_torchrun_train_as_one(tmp_path):
    script, out = tmp_path / "train.py", str(tmp_path / "rank")
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(Path(__file__).parent), out=out))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    one = pyrogen.fit(flow(), two_moons(203), steps=6, batch_size=50, lr=0.01, progress=False)
    for rank in range(2):  # every launched process returns the trained model
        launched = json.loads(Path(out + str(rank)).read_text())
        assert launched["world_size"] == 2
        torch.testing.assert_close(
            torch.tensor(launched["losses"]), torch.tensor(one.losses), rtol=RTOL, atol=0
        )


NODE_SCRIPT = """
import json, sys
import pyrogen
sys.path.insert(0, {tests!r})
from test_distributed import flow, two_moons

if __name__ == "__main__":
    result = pyrogen.fit(flow(), two_moons(203), steps=6, batch_size=50, lr=0.01,
                         progress=False, devices=1, num_nodes=2)
    with open(sys.argv[1], "w") as handle:
        json.dump({{"losses": result.losses, "world_size": result.world_size}}, handle)
"""


def test_two_nodes_of_one_process_each_train_as_one(tmp_path):
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT.format(tests=str(Path(__file__).parent)))
    port = str(distributed._free_port())
    nodes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"node{rank}.json")],
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "NODE_RANK": str(rank),
            },
        )
        for rank in range(2)
    ]
    assert [node.wait(timeout=300) for node in nodes] == [0, 0]
    one = pyrogen.fit(flow(), two_moons(203), steps=6, batch_size=50, lr=0.01, progress=False)
    for rank in range(2):  # each machine's call returns the trained model
        node = json.loads((tmp_path / f"node{rank}.json").read_text())
        assert node["world_size"] == 2
        torch.testing.assert_close(
            torch.tensor(node["losses"]), torch.tensor(one.losses), rtol=RTOL, atol=0
        )

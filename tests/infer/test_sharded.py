"""Sharded sampling and evaluation (``distributed.sample`` / ``distributed.evaluate``) in 2 CPU
processes (gloo) against one process.

``evaluate(model, x, y, num_samples=...)`` returns ``model.score_examples``'s dict of per-row
scores; :class:`Scored`, a small model with scores of each kind (exact, Monte Carlo, a
prediction from the labels), and a flow and a VAE check it.

Deterministic scores are compared in float64, where the only difference between one call on
all rows and two calls on halves is float rounding. Monte Carlo scores and draws are compared
exactly with what the two processes would compute one after the other in this process:
process r seeded with seed + r, on its share of the rows (4 and 3 of 7).

Every call with ``devices=2`` spawns two processes (several seconds each), so each test
makes as few as it can.
"""

from __future__ import annotations

import pyro
import pytest
import torch

import pyrogen
from pyrogen.infer import distributed
from pyrogen.infer.distributed import Cluster
from pyrogen.models.base import GenerativeModel

ROWS = 7  # split 4 + 3
SHARES = [distributed.shard(ROWS, Cluster(rank=r, world_size=2)) for r in range(2)]


def rows(n: int = ROWS, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator, dtype=torch.float64)


def flow(**options) -> pyrogen.FlowDensity:
    torch.manual_seed(3)
    model = pyrogen.FlowDensity((2,), transforms=2, hidden=(16, 16), **options).double()
    labels = None if options.get("num_classes") is None else torch.arange(50) % 3
    model.setup(rows(50, seed=1), labels)
    return model


def vae() -> pyrogen.VAE:
    torch.manual_seed(3)
    return pyrogen.VAE((2,), latent_dim=2, likelihood="gaussian", hidden=(16,)).double()


def completing_cvae() -> pyrogen.ConditionalVAE:
    """Given the left half of 4 x 4 images and a label, it draws the right half."""
    torch.manual_seed(3)
    return pyrogen.ConditionalVAE((4, 4), latent_dim=2, num_classes=3, observed="left")


class Scored(GenerativeModel):
    """A model contract's ``score_examples`` in small: per-row scores of every kind."""

    family = "scored"

    def __init__(self) -> None:
        super().__init__()
        self.shift = torch.nn.Parameter(torch.tensor([0.5, -0.5], dtype=torch.float64))

    def score_examples(self, x, y=None, *, num_samples=None):
        if y is not None and (y > 2).any():
            row = int((y > 2).nonzero()[0])
            raise ValueError(f"y: expected labels 0..2, got {int(y[row])} at row {row}")
        exact = -(x - self.shift).pow(2).sum(-1)
        noise = torch.randn(x.shape[0], num_samples or 4, dtype=x.dtype).mean(-1)
        scores = {"elbo": exact - noise.abs(), "log_likelihood": exact + noise}
        if y is not None:
            scores["predicted"] = (y + 1) % 3
        return scores


class Unsplittable(Scored):
    def score_examples(self, x, y=None, *, num_samples=None):
        return {"log_likelihood": x.sum()}


class Undivided(Scored):
    def score_examples(self, x, y=None, *, num_samples=None):
        return x.sum(-1)


def in_turn(seed: int, draw) -> torch.Tensor | dict[str, torch.Tensor]:
    """What the 2 processes compute, one after the other here: ``draw(share)`` seeded with
    seed + r for process r (a tensor, or a dict of them)."""
    parts = []
    for rank, share in enumerate(SHARES):
        pyro.set_rng_seed(seed + rank)
        with torch.no_grad():
            parts.append(draw(share))
    if isinstance(parts[0], dict):
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    return torch.cat(parts)


def test_scores_of_two_processes_are_one_process_scores_of_each_share_in_turn():
    model, x, y = Scored(), rows(), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    two = distributed.evaluate(model, x, y, num_samples=3, devices=2, seed=11)
    expected = in_turn(11, lambda share: model.score_examples(x[share], y[share], num_samples=3))
    assert set(two) == {"elbo", "log_likelihood", "predicted"}
    for name, value in expected.items():
        assert two[name].shape == (ROWS,) and two[name].device.type == "cpu"
        assert torch.equal(two[name], value), name  # Monte Carlo ones too: same seeds
    with torch.no_grad():  # and the exact ones are one call's on all rows
        one = model.score_examples(x, y, num_samples=3)
    assert torch.equal(two["predicted"], one["predicted"])


def test_one_process_scores_are_score_examples_seeded_with_seed():
    model, x = Scored(), rows()
    pyro.set_rng_seed(4)
    with torch.no_grad():
        expected = model.score_examples(x, num_samples=2)
    scores = distributed.evaluate(model, x.numpy(), num_samples=2, seed=4)  # array-likes too
    assert scores.keys() == expected.keys()
    assert all(torch.equal(scores[name], expected[name]) for name in expected)


def test_shares_are_4_and_3():
    assert [(s.start, s.stop) for s in SHARES] == [(0, 4), (4, 7)]


def test_exact_log_likelihood_per_row_matches_one_process():
    # Labels go with their rows; exact scores are one call's on all rows.
    model, x, y = flow(num_classes=3), rows(), torch.tensor([2, 1, 0, 0, 1, 2, 2])
    two = distributed.evaluate(model, x, y, num_samples=1, devices=2)
    with torch.no_grad():
        one = model.score_examples(x, y, num_samples=1)
        exact = model.log_prob(x, y)
    assert two.keys() == one.keys()
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-12, atol=1e-12, msg=name)
    scores = two["log_likelihood"]
    assert scores.shape == (ROWS,) and scores.dtype == torch.float64
    assert scores.device.type == "cpu"
    torch.testing.assert_close(scores, exact, rtol=1e-12, atol=1e-12)


def test_monte_carlo_scores_of_a_family_are_each_process_share_with_its_seed():
    model, x = vae(), rows()
    two = distributed.evaluate(model, x, num_samples=3, devices=2, seed=11)
    expected = in_turn(11, lambda share: model.score_examples(x[share], num_samples=3))
    assert two.keys() == expected.keys() >= {"elbo", "log_likelihood"}
    for name, value in expected.items():  # so the same seed gives the same numbers
        assert torch.equal(two[name], value), name


def test_sampling_is_reproducible_and_is_each_process_draw_in_turn():
    model = flow()
    first = distributed.sample(model, ROWS, devices=2, seed=5)
    again = distributed.sample(model, ROWS, devices=2, seed=5)
    assert first.shape == (ROWS, 2) and first.device.type == "cpu"
    assert torch.equal(first, again)
    pyro.set_rng_seed(5)
    share_0 = model.sample(4)
    pyro.set_rng_seed(6)
    share_1 = model.sample(3)
    assert torch.equal(first, torch.cat([share_0, share_1]))


def test_labels_and_given_values_are_split_with_the_rows():
    model = completing_cvae()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    observed = torch.bernoulli(torch.full((ROWS, 4, 4), 0.5), generator=torch.Generator())
    draws = distributed.sample(model, ROWS, devices=2, seed=2, y=y, observed=observed)
    assert draws.shape == (ROWS, 4, 4)
    # Each row keeps its own given half: the examples went to the processes with the rows.
    torch.testing.assert_close(draws[..., :2], observed[..., :2])
    expected = in_turn(
        2, lambda share: model.sample(len(y[share]), y[share], observed=observed[share])
    )
    assert torch.equal(draws, expected)  # and each its own label, in rank order


def test_one_process_runs_here_seeded_with_seed():
    model, x = vae(), rows()
    pyro.set_rng_seed(4)
    with torch.no_grad():
        expected = model.score_examples(x, num_samples=3)
    scores = distributed.evaluate(model, x, seed=4, num_samples=3)
    assert all(torch.equal(scores[name], value) for name, value in expected.items())
    pyro.set_rng_seed(4)
    expected = model.sample(3)
    assert torch.equal(distributed.sample(model, 3, seed=4), expected)
    gmm = pyrogen.GaussianMixture(2)
    pyrogen.fit(gmm, pyrogen.data.old_faithful(), steps=3, progress=False)
    data = pyrogen.data.old_faithful().numpy()  # array-likes are accepted
    scores = distributed.evaluate(gmm, data, num_samples=1)
    torch.testing.assert_close(scores["log_likelihood"], gmm.log_prob(data))


def shard_in_group(model, scored, x, y):
    """Run inside a process group of 2: every process's results, stacked."""
    where = distributed.cluster()
    scores = distributed.evaluate(scored, x, y, num_samples=2)["log_likelihood"]  # the group's
    draws = distributed.sample(model, ROWS, y=y, seed=9, devices=2)
    everyone = distributed.all_gather_objects((scores, draws), where)
    return {
        "world_size": where.world_size,
        "scores": torch.stack([s for s, _ in everyone]),
        "draws": torch.stack([d for _, d in everyone]),
    }


def test_inside_a_process_group_every_process_gets_every_row():
    model, x, y = flow(num_classes=3), rows(), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    scored = Scored()
    result = distributed.spawn(
        shard_in_group, (model, scored, x, y), devices=2, num_nodes=1, device_type="cpu"
    )
    assert result["world_size"] == 2
    one = in_turn(0, lambda share: scored.score_examples(x[share], y[share], num_samples=2))
    for scores in result["scores"]:
        assert torch.equal(scores, one["log_likelihood"])
    expected = in_turn(9, lambda share: model.sample(len(y[share]), y[share]))
    assert torch.equal(result["draws"][0], expected) and torch.equal(result["draws"][1], expected)


def test_an_error_in_one_process_is_raised_here_naming_the_argument():
    # Only process 1's rows hold the bad label: process 0 must not wait for it forever.
    y = torch.tensor([0, 1, 2, 0, 1, 2, 5])
    with pytest.raises(
        ValueError, match=r"^y: .*got 5 at row 2 \(in process 1 of 2, on rows 4\.\.6 of 7\)$"
    ):
        distributed.evaluate(Scored(), rows(), y, num_samples=1, devices=2)


def test_scores_without_one_value_per_row_are_refused():
    with pytest.raises(
        ValueError, match=r"model: Unsplittable.score_examples\['log_likelihood'\] returned sh"
    ):
        distributed.evaluate(Unsplittable(), rows(), num_samples=1)
    with pytest.raises(ValueError, match=r"model: Undivided.score_examples returned a Tensor; "):
        distributed.evaluate(Undivided(), rows(), num_samples=1)


def unpicklable_option():
    return lambda value: value


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: distributed.sample(flow(), 0), "n: expected a positive integer, got 0"),
        (lambda: distributed.sample(flow(), 3, devices=0), "devices: expected a positive"),
        (lambda: distributed.sample(flow(), 3, num_nodes=True), "num_nodes: expected a posi"),
        (lambda: distributed.sample(flow(), 3, seed=1.5), "seed: expected an integer or None"),
        (lambda: distributed.sample(flow(), 3, y=[0, 1]), r"y: expected shape \(3, \.\.\.\)"),
        (lambda: distributed.sample(object(), 3), "model: object has no method 'sample'"),
        (lambda: distributed.sample(flow(), 3, device="gpu"), "device: expected a device"),
        (lambda: distributed.evaluate(Scored(), rows(), num_samples=0), "num_samples: expec"),
        (lambda: distributed.evaluate(object(), rows()), "model: object has no method 'score_"),
        (lambda: distributed.evaluate(Scored(), rows()[:0]), r"x: expected shape \(N, "),
        (lambda: distributed.evaluate(Scored(), 1.0), r"x: expected shape \(N, \.\.\.\)"),
        (lambda: distributed.evaluate(Scored(), ["a", "b"]), "x: expected numbers"),
        (
            lambda: distributed.evaluate(Scored(), rows(), y=torch.zeros(6)),
            r"y: expected shape \(7, \.\.\.\), got \(6,\)",
        ),
        (
            lambda: distributed.evaluate(Scored(), rows(), num_nodes=2, devices=2),
            "num_nodes=2: set MASTER_ADDR, MASTER_PORT, NODE_RANK",
        ),
        (
            lambda: distributed.sample(flow(), 3, devices=2, transform=unpicklable_option()),
            "devices: each process gets its own copy .* does not pickle",
        ),
    ],
    ids=lambda value: value.split(":")[0].replace("\\", "") if isinstance(value, str) else "",
)
def test_bad_arguments_are_named(call, message, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=message):
        call()


def test_cuda_without_a_gpu_is_a_clean_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="device: expected an available device, got 'cuda'"):
        distributed.evaluate(Scored(), rows(), num_samples=1, device="cuda", devices=2)

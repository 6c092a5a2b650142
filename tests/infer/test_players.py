"""Models trained in turns (``GenerativeModel.players``): ``pyrogen.fit`` gives every player
its turns on each batch with its own optimizer, exactly as a hand-written alternating loop,
and checkpoints resume such a run exactly."""

from __future__ import annotations

import pyro
import pytest
import torch

import pyrogen
from pyrogen.models.base import GenerativeModel, Player


class Duel(GenerativeModel):
    """Two players on a batch x (B, 2): ``mover`` pulls ``a`` towards the rows' mean minus
    ``b``; ``chaser`` (two turns a step, at half the learning rate) pulls ``b`` towards
    ``a`` plus noise, so the players see each other's moves and the step's random state."""

    family = "duel"

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(2))
        self.b = torch.nn.Parameter(torch.ones(2))

    @property
    def config(self):
        return {}

    def setup(self, x, y=None, *, seed=0):
        pass

    def players(self):
        return (Player("mover", [self.a]), Player("chaser", [self.b], lr_scale=0.5, updates=2))

    def player_loss(self, player, x, y, num_data):
        if player == "mover":
            return num_data * ((self.a - (x.mean(0) - self.b.detach())) ** 2).sum()
        target = self.a.detach() + 0.1 * torch.randn(2)
        return num_data * ((self.b - target) ** 2).sum()


def _rows() -> torch.Tensor:
    return torch.randn(40, 2, generator=torch.Generator().manual_seed(0))


def _by_hand(x, steps: int, lr: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same turns written out, with the engine's full-batch steps and step seeds."""
    from pyrogen.infer.noise import seed_device, step_seed
    from pyrogen.nn.optim import adam

    model = Duel()
    mover = adam([model.a], lr=lr)
    chaser = adam([model.b], lr=lr * 0.5)
    for step in range(steps):
        seed_device(step_seed(seed, step), torch.device("cpu"))
        for optimizer, name, turns in ((mover, "mover", 1), (chaser, "chaser", 2)):
            for _ in range(turns):
                optimizer.zero_grad()
                model.player_loss(name, x, None, len(x)).backward()
                optimizer.step()
    return model.a.detach(), model.b.detach()


def test_fit_takes_the_turns_of_a_hand_written_loop():
    x = _rows()
    duel = Duel()
    result = pyrogen.fit(duel, x, steps=30, lr=0.05, seed=2, progress=False)
    a, b = _by_hand(x, 30, 0.05, 2)
    assert torch.equal(duel.a.detach(), a) and torch.equal(duel.b.detach(), b)
    assert len(result.losses) == 30  # the first player's loss, per example
    assert result.losses[-1] < result.losses[0]


def test_a_run_in_turns_resumes_exactly(tmp_path):
    x, path = _rows(), tmp_path / "duel.pt"
    whole = Duel()
    pyrogen.fit(whole, x, steps=20, lr=0.05, progress=False)
    pyrogen.fit(Duel(), x, steps=8, lr=0.05, checkpoint=path, progress=False)
    resumed = Duel()
    pyrogen.fit(resumed, x, steps=20, lr=0.05, checkpoint=path, resume=True, progress=False)
    assert torch.equal(resumed.a, whole.a) and torch.equal(resumed.b, whole.b)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"compile": True}, "compile='replay' does not support"),
        ({"compile": "inductor"}, "compile='inductor' does not support"),
        ({"micro_batch_size": 5}, "micro_batch_size below the batch size does not support"),
        ({"validation": torch.zeros(4, 2)}, "held-out validation"),
    ],
)
def test_what_turns_do_not_support_yet_is_refused(options, message):
    with pytest.raises(ValueError, match=f"Duel is trained in turns.*{message}"):
        pyrogen.fit(Duel(), _rows(), steps=2, progress=False, **options)


def test_a_family_with_an_elbo_is_not_trained_in_turns():
    with pytest.raises(NotImplementedError, match="is not trained in turns"):
        pyrogen.VAE((2,), latent_dim=1).player_loss("any", _rows(), None, 40)
    assert pyrogen.VAE((2,), latent_dim=1).players() == ()
    pyro.clear_param_store()

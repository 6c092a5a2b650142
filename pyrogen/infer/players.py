"""Models trained in turns: several parties, each with its own loss and optimizer, updated
one after another at every step of the same training loop (a GAN's discriminator and
generator).

A family says who its parties are with :meth:`GenerativeModel.players
<pyrogen.models.base.GenerativeModel.players>` and what each minimizes with
:meth:`~pyrogen.models.base.GenerativeModel.player_loss`; :func:`pyrogen.fit` then makes one
optimizer per player (:class:`PlayerOptimizers`, saved and restored as one, so checkpoints
resume exactly) and, at every step, gives each player its turns on the step's batch
(:func:`take_turns`). Everything else -- batches, epochs, callbacks, checkpoints, the NaN
guard -- is the loop every family trains with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pyrogen.models.base import GenerativeModel, Player

__all__ = ["PlayerOptimizers", "take_turns"]


class PlayerOptimizers:
    """One optimizer per player, ``optim(player.parameters, lr=lr * player.lr_scale)``,
    presented to the loop and its checkpoints as one optimizer.

    Args:
        players: the model's players, in turn order.
        optim: the optimizer factory of :func:`pyrogen.fit`.
        lr: the base learning rate.

    Attributes:
        optimizers: player name -> its optimizer.
    """

    def __init__(self, players: Sequence[Player], optim: Callable[..., Any], lr: float) -> None:
        self.optimizers = {p.name: optim(list(p.parameters), lr=lr * p.lr_scale) for p in players}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """Every player's parameter groups, in turn order."""
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """``{"players": {name: that optimizer's state_dict}}``."""
        return {"players": {name: opt.state_dict() for name, opt in self.optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every player's optimizer from :meth:`state_dict`'s output.

        Raises:
            ValueError: the state is not one written for these players.
        """
        saved = state.get("players") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or set(saved) != set(self.optimizers):
            got = sorted(saved) if isinstance(saved, dict) else type(state).__name__
            expected = sorted(self.optimizers)
            raise ValueError(f"expected the optimizers of players {expected}, got {got}")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])


def take_turns(
    model: GenerativeModel,
    players: Sequence[Player],
    optimizers: PlayerOptimizers,
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_data: int,
    clip_norm: float | None = None,
) -> dict[str, float]:
    """One training step of a model trained in turns: each player in order takes its
    ``updates`` turns -- zero its gradients, its :meth:`player_loss` on the batch (a fresh
    forward pass, after the players before it have moved), backward, clip, step.

    Args:
        model: a model trained in turns.
        players: its :meth:`players`, listed once per fit (not every step).
        optimizers: their :class:`PlayerOptimizers`.
        x: the step's rows (B, ...); y: their labels (B,) or None.
        num_data: N, the rows in the data set (the losses are scaled to them).
        clip_norm: largest gradient norm of each player's parameters, or None.

    Returns:
        player name -> its last turn's loss, in nats per example (divided by N).
    """
    losses = {}
    for player in players:
        optimizer = optimizers.optimizers[player.name]
        for _ in range(player.updates):
            optimizer.zero_grad(set_to_none=True)
            loss = model.player_loss(player.name, x, y, num_data)
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(player.parameters), clip_norm)
            optimizer.step()
            if player.after_step is not None:
                player.after_step()
        losses[player.name] = loss.item() / num_data
    return losses

"""Noise that does not depend on how a batch's rows are split.

:func:`pyrogen.fit` may score a global batch of B rows in pieces: a share per process
(``strategy="ddp"``) and, within a process, micro-batches (``micro_batch_size``). The pieces'
losses and gradients add up to the whole batch's only if every row gets the noise it would
get were the B rows scored at once, in one process: a VAE's reparameterized z, a diffusion
model's step and noise, a variational mixture's global draws. So every piece of a step starts
from the same random state (:func:`step_seed`), and at each latent sample site inside the
data plate it draws the noise of all B rows and keeps its own (:class:`RowNoise`).

What is exact: draws of Pyro sample sites made with torch's random functions whose use of
the random stream does not depend on the parameters' values (``normal_``, ``rand``,
``randint``, ``bernoulli`` and the other functions in ``_PADDED``; these make every
location-scale, uniform, Bernoulli and flow draw). Draws whose stream use depends on the
values (gamma and Dirichlet rejection sampling) or that are not sample sites (a dropout
layer, a random label drop in a network) are each piece's own: still an unbiased
estimate, but no longer the same numbers as one process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch.overrides import TorchFunctionMode

from pyrogen.models.base import DATA_PLATE


def step_seed(seed: int, step: int) -> int:
    """The seed of the random state that every piece of training step ``step`` starts from:
    the same in every process, and for a resumed run, without any state to carry.

    Args:
        seed: the run's seed (``fit(seed=...)``).
        step: the step's number, 0 for the first.

    Returns:
        a 63-bit integer, a hash of (seed, step), for ``torch.manual_seed``.
    """
    return _hashed_seed(seed, step)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the generator that ``fit(epoch_transform=...)`` gets in epoch ``epoch``:
    the same in every process and for a resumed run, and no step's seed.

    Args:
        seed: the run's seed (``fit(seed=...)``).
        epoch: the epoch's number, 0 for the first.

    Returns:
        a 63-bit integer, a hash of (seed, epoch), for ``torch.Generator.manual_seed``.
    """
    return _hashed_seed(seed, epoch, _EPOCH_STREAM)


# Tells an epoch's seed from a step's: (seed, n) is step n, (seed, n, 1) epoch n.
_EPOCH_STREAM = 1


def _hashed_seed(*words: int) -> int:
    high, low = np.random.SeedSequence(list(words)).generate_state(2)
    return (int(high) << 32 | int(low)) >> 1


def seed_device(seed: int, device: torch.device) -> None:
    """Set the random state of the generator that draws on ``device`` (and the CPU's).

    Called at every training step: ``torch.manual_seed`` seeds every backend's generators,
    about 0.1 ms on the CPU alone, where one generator's ``manual_seed`` takes about 1 us.

    Args:
        seed: e.g. :func:`step_seed`'s value.
        device: the device the step's draws are made on.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def seed_globally(seed: int, device: torch.device) -> None:
    """Seed Python's, NumPy's and torch's global generators (the CPU's and ``device``'s),
    as ``pyro.set_rng_seed`` does for every device, without the 0.1 ms of queueing a
    seed for each backend not yet started.

    Args:
        seed: the seed.
        device: the device whose generator is seeded besides the CPU's.
    """
    random.seed(seed)
    np.random.seed(seed)
    seed_device(seed, device)


class RowNoise(Messenger):
    """Latent sample sites inside the data plate draw the noise of the whole batch's
    ``total`` rows and keep rows ``offset .. offset + count`` (this piece's).

    Enter it around a piece's loss, outside the ELBO, so that sites the ELBO gives a value
    to (replayed, enumerated, observed) are left alone.

    Args:
        offset: position of the piece's first row in the global batch.
        count: rows in the piece.
        total: rows in the global batch.
    """

    def __init__(self, offset: int, count: int, total: int) -> None:
        super().__init__()
        self.offset, self.count, self.total = offset, count, total

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or msg["value"] is not None or site_is_subsample(msg):
            return
        frame = next((f for f in msg["cond_indep_stack"] if f.name == DATA_PLATE), None)
        fn = msg["fn"]
        batch = fn.batch_shape
        if frame is None or len(batch) < -frame.dim or batch[frame.dim] != self.count:
            return  # not per row, or broadcast over the rows
        # The rows' dim in a draw: the plate's batch dim, left of the event dims.
        dim = frame.dim - len(fn.event_shape)
        with _PaddedDraws(dim, self.offset, self.count, self.total):
            msg["value"] = fn(*msg["args"], **msg["kwargs"])


class _PaddedDraws(TorchFunctionMode):
    """Random functions whose result has ``count`` rows in ``dim`` draw ``total`` rows
    instead, this piece's among them at ``offset``, and return this piece's rows."""

    def __init__(self, dim: int, offset: int, count: int, total: int) -> None:
        super().__init__()
        self.dim, self.offset, self.count, self.total = dim, offset, count, total

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _PADDED.get(func)
        if handler is None:
            return func(*args, **kwargs)
        return handler(self, func, args, kwargs)

    # --- shapes and values ----------------------------------------------------------------
    def has_rows(self, shape: Sequence[int]) -> bool:
        return len(shape) >= -self.dim and shape[self.dim] == self.count

    def padded_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = list(shape)
        shape[self.dim] = self.total
        return torch.Size(shape)

    def take(self, values: torch.Tensor) -> torch.Tensor:
        """This piece's rows of a draw of ``total`` rows."""
        return values.narrow(self.dim, self.offset, self.count)

    def pad(self, value: Any) -> Any:
        """A parameter of this piece's rows, with the other rows' places filled by copies of
        its first row (any valid value: the draws kept are this piece's own)."""
        if not (isinstance(value, torch.Tensor) and self.has_rows(value.shape)):
            return value
        first = value.narrow(self.dim, 0, 1)
        after = self.total - self.offset - self.count
        parts = [first.expand(self.shape_with(value.shape, self.offset)), value]
        parts.append(first.expand(self.shape_with(value.shape, after)))
        return torch.cat(parts, dim=self.dim)

    def shape_with(self, shape: Sequence[int], rows: int) -> torch.Size:
        shape = list(shape)
        shape[self.dim] = rows
        return torch.Size(shape)


def _in_place(mode: _PaddedDraws, func: Callable, args: tuple, kwargs: dict) -> Any:
    """``tensor.normal_()`` and the like: fill a larger tensor, copy this piece's rows."""
    target, rest = args[0], args[1:]
    if not mode.has_rows(target.shape):
        return func(*args, **kwargs)
    whole = target.new_empty(mode.padded_shape(target.shape))
    func(whole, *(mode.pad(value) for value in rest), **kwargs)
    with torch.no_grad():
        target.copy_(mode.take(whole))
    return target


def _with_parameters(mode: _PaddedDraws, func: Callable, args: tuple, kwargs: dict) -> Any:
    """``torch.bernoulli(p)``, ``torch.normal(loc, scale)``, ...: pad every parameter."""
    shapes = [value.shape for value in args if isinstance(value, torch.Tensor)]
    if not shapes:  # torch.normal(0.0, 1.0, size)
        return _sized(mode, func, args, kwargs)
    if not mode.has_rows(torch.broadcast_shapes(*shapes)):
        return func(*args, **kwargs)
    return mode.take(func(*(mode.pad(value) for value in args), **kwargs))


def _sized(mode: _PaddedDraws, func: Callable, args: tuple, kwargs: dict) -> Any:
    """``torch.rand(size)``, ``torch.randint(low, high, size)``, ...: draw a larger size."""
    kwargs = dict(kwargs)
    if "size" in kwargs:
        size, place = kwargs["size"], "keyword"
    elif func in (torch.randint, torch.normal):  # the size is the last argument
        size, place = (args[-1] if args else None), "last"
    else:  # torch.rand(2, 3) or torch.rand((2, 3))
        one = len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size))
        size, place = (args[0] if one else args), ("first" if one else "all")
    if not isinstance(size, (tuple, list, torch.Size)) or not mode.has_rows(size):
        return func(*args, **kwargs)
    whole = mode.padded_shape(size)
    if place == "keyword":
        kwargs["size"] = whole
    elif place == "last":
        args = (*args[:-1], whole)
    else:
        args = (whole,)
    return mode.take(func(*args, **kwargs))


def _like(mode: _PaddedDraws, func: Callable, args: tuple, kwargs: dict) -> Any:
    """``torch.randn_like(x)`` and the like: draw like a larger tensor."""
    like = args[0]
    if not mode.has_rows(like.shape):
        return func(*args, **kwargs)
    whole = like.new_empty(mode.padded_shape(like.shape))
    return mode.take(func(whole, *args[1:], **kwargs))


_PADDED: dict[Callable, Callable] = {
    **{
        getattr(torch.Tensor, name): _in_place
        for name in (
            "normal_",
            "uniform_",
            "exponential_",
            "cauchy_",
            "log_normal_",
            "geometric_",
            "random_",
            "bernoulli_",
        )
    },
    **{func: _sized for func in (torch.rand, torch.randn, torch.randint)},
    **{func: _like for func in (torch.rand_like, torch.randn_like, torch.randint_like)},
    **{
        func: _with_parameters
        for func in (torch.bernoulli, torch.normal, torch.poisson, torch.binomial)
    },
}

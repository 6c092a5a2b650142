"""The model contract every pyrogen family follows.

A family is a :class:`pyro.nn.PyroModule` with ``model`` / ``guide`` methods that share site
names, a ``loss`` (the Pyro ELBO it is trained with), ``sample``, a JSON-serialisable
``config``, and data-dependent initialisation in ``setup``. Because ``model`` and ``guide``
are plain Pyro programs, ``pyro.infer.SVI(m.model, m.guide, optim, m.loss)`` trains them
directly; :func:`pyrogen.fit` adds minibatching, checkpoints and diagnostics on top.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import pyro
import torch
from pyro.infer import ELBO
from pyro.nn import PyroModule

from pyrogen import __version__
from pyrogen.io import PathLike, load_checkpoint, save_checkpoint

#: Name of the plate over data rows in every family.
DATA_PLATE = "data"

# Each instance gets its own prefix in Pyro's global param store, so two models of the same
# family in one process never share parameters by accident.
_instance_ids = itertools.count()


def data_plate(x: torch.Tensor, num_data: int | None = None) -> pyro.plate:
    """The plate over the rows of ``x``, scaled to stand for ``num_data`` rows.

    Args:
        x: a minibatch of shape ``(batch_size, ...)``.
        num_data: rows in the full data set; ``None`` means ``x`` is the full data set.

    Returns:
        ``pyro.plate("data", num_data, subsample=...)``: log-likelihood terms inside it are
        multiplied by ``num_data / batch_size``, so the minibatch ELBO is unbiased.
    """
    batch_size = x.shape[0]
    if num_data is None or num_data == batch_size:
        return pyro.plate(DATA_PLATE, batch_size, dim=-1)
    if num_data < batch_size:
        raise ValueError(f"num_data: expected at least the batch size {batch_size}, got {num_data}")
    subsample = torch.arange(batch_size, device=x.device)
    return pyro.plate(DATA_PLATE, num_data, subsample=subsample, dim=-1)


class GenerativeModel(PyroModule):
    """Base class of every family: the shared half of the model contract.

    Subclasses set ``family`` (the registry name), implement ``model``, ``guide``,
    ``loss``, ``config`` and ``sample``, and may override ``setup`` for data-dependent
    initialisation and ``fit_defaults`` for the engine's defaults.
    """

    family: ClassVar[str] = ""
    #: Keyword defaults :func:`pyrogen.fit` uses for this family (steps, lr, ...).
    fit_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__(name=f"{type(self).__name__}_{next(_instance_ids)}")

    # --- the contract -------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None):
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None):
        raise NotImplementedError

    @property
    def loss(self) -> ELBO:
        """The Pyro ELBO this family is trained with."""
        raise NotImplementedError

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``type(self)(**config)`` rebuilds it."""
        raise NotImplementedError

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Data-dependent initialisation, run by :func:`pyrogen.fit` before the first step."""

    def minibatch_order(
        self, num_rows: int, batch_size: int, y: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """Row indices of one training epoch; :func:`pyrogen.fit` takes them ``batch_size``
        at a time. The default is a random permutation of the N rows; a family may repeat or
        group rows (the semi-supervised VAE puts labelled rows in every batch).

        Args:
            num_rows: N, the rows in the data set.
            batch_size: rows per training step.
            y: the labels passed to :func:`pyrogen.fit` (N, ...) or None.
            generator: the only source of randomness, so that training resumes exactly.

        Returns:
            int64 tensor of row indices, shape (rows in the epoch,).
        """
        return torch.randperm(num_rows, generator=generator)

    @property
    def exact_likelihood(self) -> bool:
        """Whether ``log_prob(x)`` is the exact log-likelihood; otherwise the family
        reports bounds (``elbo`` and the importance-weighted ``log_likelihood``)."""
        return False

    @property
    def is_setup(self) -> bool:
        """Whether the model has parameters to train (``setup`` ran or a state was loaded)."""
        return True

    # --- devices and files --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the model's parameters and buffers (CPU when it has none yet)."""
        for tensor in itertools.chain(self.parameters(), self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def save(self, path: PathLike) -> None:
        """Write config and parameters to ``path`` atomically (readable by :func:`load`)."""
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        save_checkpoint(
            path,
            {
                "pyrogen_version": __version__,
                "family": self.family,
                "config": self.config,
                "state_dict": state,
            },
        )

    @classmethod
    def from_state(cls, config: dict[str, Any], state_dict: dict[str, torch.Tensor]):
        """Rebuild a model from its ``config`` and a ``state_dict``."""
        model = cls(**config)
        model.load_state_dict(state_dict)
        return model


def load(path: PathLike) -> GenerativeModel:
    """Load any model written by :meth:`GenerativeModel.save` (``weights_only=True``).

    Args:
        path: a file written by ``model.save(path)`` or a ``pyrogen.fit`` checkpoint.

    Returns:
        the model, on the CPU, in the state it was saved in.
    """
    from pyrogen.models import REGISTRY

    payload = load_checkpoint(path, required=("family", "config", "state_dict"))
    family = payload["family"]
    if family not in REGISTRY:
        raise ValueError(
            f"checkpoint {str(Path(path))!r}: unknown family {family!r}, "
            f"expected one of {sorted(REGISTRY)}"
        )
    return REGISTRY[family].from_state(payload["config"], payload["state_dict"])

"""What every discriminative family reports through the contract: it models p(y | x) (or
p(y | z_t)) only, so it scores labels exactly, predicts classes and draws no x."""

from __future__ import annotations

from typing import ClassVar

import torch

from pyrogen.models.base import GenerativeModel

__all__ = ["DiscriminativeModel"]


class DiscriminativeModel(GenerativeModel):
    """Base of a family of p(y | ``conditioned_on``): the reporting half of the contract,
    the same for every such family (logistic regression, a noise-conditional classifier).

    Subclasses set :attr:`conditioned_on` and keep their own ``sample`` (which raises,
    saying what to use instead) and ``score_descriptions``.
    """

    #: Not a generator of x: ``sample`` raises.
    generates_data: ClassVar[bool] = False
    #: What the labels are conditioned on, as reports write it (``"x"``, ``"z_0"``).
    conditioned_on: ClassVar[str] = "x"

    @property
    def discriminative_reason(self) -> str:
        """The start of a message saying why the family cannot do something of p(x)."""
        return (
            f"{type(self).__name__} is discriminative: it models p(y | {self.conditioned_on}) "
            "only, so it has no p(x) "
        )

    @property
    def exact_likelihood(self) -> bool:
        """True, of the conditional: ``log_prob(x, y)`` is log p(y | ...) exactly."""
        return True

    @property
    def likelihood_target(self) -> str:
        """``"log p(y | x)"`` (or what :attr:`conditioned_on` names): no p(x)."""
        return f"log p(y | {self.conditioned_on})"

    @property
    def label_count(self) -> int | None:
        """None: ``sample`` takes no label (it draws no x)."""
        return None

    @property
    def predicts(self) -> str | None:
        """``predict(x)`` is the most probable class."""
        return "class"

    def values_per_example(self, x: torch.Tensor) -> int:
        """1: the label is the one value scored per example."""
        return 1

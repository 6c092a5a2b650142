"""What a family whose class is a latent variable reports: observed where a row has a label,
inferred where it has none (-1), and predicted by ``predict(x)``."""

from __future__ import annotations


class InfersLabels:
    """Reporting half of the contract for a family with a latent class (the semi-supervised
    VAE, naive Bayes): mixed in before :class:`~pyrogen.models.GenerativeModel`."""

    @property
    def predicts(self) -> str | None:
        """``predict(x)`` is the most probable class."""
        return "class"

    @property
    def conditions_on_labels(self) -> bool:
        """False: the label is a latent variable, inferred where it is not given."""
        return False

    @property
    def takes_labels(self) -> bool:
        """True: the given labels are observed, the others (-1) inferred."""
        return True

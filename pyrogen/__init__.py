"""pyrogen: generative models as first-class Pyro model/guide pairs."""

__version__ = "0.1.0"

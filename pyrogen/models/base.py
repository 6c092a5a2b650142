"""The model contract every pyrogen family follows.

A family is a :class:`pyro.nn.PyroModule` with ``model`` / ``guide`` methods that share site
names, a ``loss`` (the Pyro ELBO it is trained with), ``sample``, and data-dependent
initialisation in ``setup``. Because ``model`` and ``guide`` are plain Pyro programs,
``pyro.infer.SVI(m.model, m.guide, optim, m.loss)`` trains them directly;
:func:`pyrogen.fit` adds minibatching, checkpoints and diagnostics on top. A model has no
``fit`` of its own: training is the engine's, one layer up, and workflows that need it or a
sampler (choosing a mixture's K, NUTS) live there too (:mod:`pyrogen.infer.mixtures`).

What a new family writes, and what it inherits:

* **construction**: store every constructor argument under its own name (the value it
  resolved to; a network built from argument ``name`` keeps the argument in
  ``<name>_kind``). :attr:`GenerativeModel.config` reads them back, JSON-serialised, so
  ``type(m)(**m.config)`` rebuilds any model and checkpoints need no code per family. A
  subclass that passes its parent's arguments on through ``**options`` names only its own;
  the signature (``inspect.signature(cls)``) and ``config`` resolve the rest through the
  parent's constructor.
* **scoring**: ``exact_likelihood`` and ``log_prob``, or ``elbo`` and ``log_likelihood``
  (bounds); :meth:`GenerativeModel.score_examples` is the one place scoring is done, and
  ``bits_per_dim`` is implemented once from ``log_likelihood`` and
  :meth:`GenerativeModel.values_per_example`.
* **reporting**: ``report_plots``, ``score_descriptions``, ``fit_statistics``,
  ``report_samples``, and what a label is (``conditions_on_labels``, ``label_count``,
  ``label_kind``, ``label_names``, ``predicts``); by default a family with ``num_classes``
  is conditioned on its classes.
* **posteriors over global sites** (ArviZ): ``posterior_dims``, ``derived_posterior`` and
  ``pointwise_log_likelihood``; empty or None for families whose latents are per row.

The layers above (diagnostics, the command line) know families only through this contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyro
import torch
from pyro.infer import ELBO
from pyro.nn import PyroModule
from torch.nn.parameter import UninitializedTensorMixin

from pyrogen.io import PathLike, load_checkpoint, save_checkpoint
from pyrogen.models.checkpoints import check_config, check_payload, check_state, sized_skeleton
from pyrogen.version import __version__

#: Name of the plate over data rows in every family.
DATA_PLATE = "data"

#: K, the importance samples per example of the log-likelihood bound when scoring.
DEFAULT_IW_SAMPLES = 100
#: What a model's config records for a constructor argument given as an ``nn.Module``: the
#: module itself is not saved, so :func:`load` refuses such a model (rebuild it, then
#: ``load_state_dict``).
CUSTOM_MODULE = "custom"

# What _config_attribute finds where a constructor stored nothing.
_MISSING = object()

# Each instance gets its own prefix in Pyro's global param store, so two models of the same
# family in one process never share parameters by accident.
_instance_ids = itertools.count()
# Whether networks are read without registering their parameters (see unregistered_networks).
_networks = threading.local()


@contextlib.contextmanager
def unregistered_networks() -> Iterator[None]:
    """Within the block, a family's plain ``nn.Module`` networks and ``nn.Parameter`` values
    are read as they are, without the ``pyro.module`` / ``pyro.param`` statement that
    :class:`~pyro.nn.PyroModule` makes at every access.

    Those statements put every network parameter in Pyro's param store and in every trace,
    which a ``pyro.optim`` optimizer needs; :func:`pyrogen.fit` steps a torch optimizer
    over ``model.parameters()`` and needs neither, while the statements cost a message per
    parameter per step (about a millisecond on a small VAE). The values, and so every loss
    and gradient, are the same either way. Constrained ``PyroParam`` values are still read
    through Pyro.
    """
    before = getattr(_networks, "unregistered", False)
    _networks.unregistered = True
    try:
        yield
    finally:
        _networks.unregistered = before


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


def generative_plate(
    x: torch.Tensor | None, y: torch.Tensor | None, num_data: int | None
) -> tuple[pyro.plate, int]:
    """The plate of a model that observes rows x (N, ...) when given (:func:`data_plate`)
    and otherwise draws ``len(y)`` rows, else ``num_data`` (default 1); and its row count."""
    if x is not None:
        return data_plate(x, num_data), x.shape[0]
    rows = len(y) if y is not None else (num_data or 1)
    return pyro.plate(DATA_PLATE, rows, dim=-1), rows


class _RecordsConstruction(type(PyroModule)):
    """Metaclass that remembers how a model was built: its constructor's arguments and a
    fingerprint of the values the constructor gave its parameters and buffers, so that
    :meth:`GenerativeModel.initialize` can draw them again from a seed and can tell
    whether anything (training, loading, a user) has changed them since."""

    def __call__(cls, *args: Any, **kwargs: Any):
        instance = super().__call__(*args, **kwargs)
        # Plain attributes, not submodules: modules among the arguments are registered by
        # the constructor already, or are the caller's to keep.
        object.__setattr__(instance, "_construction", (args, kwargs))
        object.__setattr__(instance, "_built_state", _fingerprint(instance))
        return instance

    @property
    def __signature__(cls) -> inspect.Signature:
        # inspect would otherwise report this __call__'s (*args, **kwargs) for every family;
        # the command line and config read the constructor's arguments, with a subclass's
        # **options resolved into the parent's arguments it passes them on to.
        return inspect.Signature(_constructor_parameters(cls))


def _constructor_parameters(cls: type) -> list[inspect.Parameter]:
    """The arguments ``cls(...)`` takes: its ``__init__``'s, and where that ends in a
    ``**options`` catch-all passed to the parent's ``__init__``, the parent's arguments it
    does not name itself (keyword-only, since they can only reach it by keyword)."""
    parameters: list[inspect.Parameter] = []
    keyword_only = False
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        own = list(inspect.signature(klass.__init__).parameters.values())[1:]
        named = {p.name for p in parameters}
        for parameter in own:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name not in named:
                kind = parameter.KEYWORD_ONLY if keyword_only else parameter.kind
                parameters.append(parameter.replace(kind=kind))
        if not any(p.kind is p.VAR_KEYWORD for p in own):
            break
        keyword_only = True
    # Keyword-only arguments after the positional ones, as a signature requires (stable).
    return sorted(parameters, key=lambda p: p.kind)


# One state entry's fingerprint: the dtype it was built in (None: a lazy parameter, drawn
# on first use) and a digest of its shape and values read in that dtype.
_Print = tuple[torch.dtype | None, bytes]


def _fingerprint(
    module: torch.nn.Module, dtypes: dict[str, _Print] | None = None
) -> dict[str, _Print]:
    """Every state entry's dtype and digest; with ``dtypes`` (an earlier fingerprint) each
    is read in the dtype given there, on the CPU, so that moving the model to another
    device or to float64 leaves its fingerprint as it was."""
    prints: dict[str, _Print] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if isinstance(tensor, UninitializedTensorMixin):
            prints[name] = (None, b"")
            continue
        if tensor.is_meta:  # a model built on the meta device to size it: no values
            prints[name] = (tensor.dtype, b"")
            continue
        dtype = (dtypes or {}).get(name, (None,))[0] or tensor.dtype
        values = tensor.detach().to("cpu", dtype).contiguous().reshape(-1)
        digest = hashlib.blake2b(str(tuple(tensor.shape)).encode(), digest_size=16)
        digest.update(values.view(torch.uint8).numpy().tobytes())
        prints[name] = (dtype, digest.digest())
    return prints


@dataclass(frozen=True)
class Player:
    """One party of a model trained in turns (:meth:`GenerativeModel.players`).

    Attributes:
        name: what :meth:`GenerativeModel.player_loss` is asked for.
        parameters: the parameters this player's optimizer steps.
        lr_scale: its learning rate as a multiple of ``fit``'s ``lr`` (two time scales).
        updates: its turns per training step (e.g. a critic's 5 per generator step).
        after_step: called after each of its optimizer steps (e.g. to update a moving
            average of its weights), or None.
    """

    name: str
    parameters: Sequence[torch.nn.Parameter]
    lr_scale: float = 1.0
    updates: int = 1
    after_step: Callable[[], None] | None = None


class GenerativeModel(PyroModule, metaclass=_RecordsConstruction):
    """Base class of every family: the shared half of the model contract.

    Subclasses set ``family`` (the registry name), implement ``model``, ``guide``,
    ``loss`` and ``sample``, store every constructor argument under its own name (that is
    what :attr:`config` reads back), and may override ``setup`` for data-dependent
    initialisation and ``fit_defaults`` for the engine's defaults.

    Initial values follow one rule, in every family: the constructor draws them from
    torch's random state as any ``nn.Module`` does, and :func:`pyrogen.fit` with ``seed``
    draws them again from that seed (:meth:`initialize`) while the model still has the
    values its constructor gave it (:attr:`is_as_built`). A model that was trained,
    loaded, resumed, or whose values were set by hand (``load_state_dict``, ``copy_``,
    ``.data``, new parameters) keeps them. Modules and models passed to the constructor
    (an ``encoder``, a ``denoiser``, an ``autoencoder``) are the caller's and keep their
    weights: seed torch before building them if they are random.
    """

    family: ClassVar[str] = ""
    #: C, the classes of labelled data; None for a family without classes (a family with
    #: them sets it from its ``num_classes`` argument).
    num_classes: int | None = None
    #: Keyword defaults :func:`pyrogen.fit` uses for this family (steps, lr, ...).
    fit_defaults: ClassVar[dict[str, Any]] = {}
    #: Constructor arguments that take one of a fixed set of values, and those values
    #: (``pyrogen fit FAMILY`` offers them as the option's choices).
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    #: Whether the family models images, so that ``pyrogen fit`` reads them (split into
    #: training and test rows, the test rows scored), rather than a table fitted whole.
    reads_images: ClassVar[bool] = False
    #: Whether the family has a likelihood (exact, or bounded by an ELBO) to score data with;
    #: an implicit model (a GAN) has none, and is judged by its samples instead
    #: (:mod:`pyrogen.diagnostics.sample_tests`).
    has_likelihood: ClassVar[bool] = True
    #: Whether ``sample`` draws examples x; a discriminative family (logistic regression,
    #: which models p(y | x) only) says False.
    generates_data: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__(name=f"{type(self).__name__}_{next(_instance_ids)}")

    def __getattr__(self, name: str) -> Any:
        if getattr(_networks, "unregistered", False):  # see unregistered_networks
            state = self.__dict__
            module = state["_modules"].get(name)
            if module is not None and not isinstance(module, PyroModule):
                return module
            parameter = state["_parameters"].get(name)
            if parameter is not None and name not in state.get("_pyro_params", ()):
                return parameter
        return super().__getattr__(name)

    # --- the contract -------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None):
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None):
        raise NotImplementedError

    @property
    def loss(self) -> ELBO:
        """The Pyro ELBO this family is trained with."""
        raise NotImplementedError

    def players(self) -> tuple[Player, ...]:
        """The parties trained in turn at every step, in order, each on its own
        :meth:`player_loss` with its own optimizer (a GAN's discriminator, then its
        generator); ``()`` -- every family with an ELBO -- trains all parameters on
        :attr:`loss`. See :mod:`pyrogen.infer.players`."""
        return ()

    def player_loss(
        self, player: str, x: torch.Tensor, y: torch.Tensor | None, num_data: int
    ) -> torch.Tensor:
        """The scalar loss ``player`` minimizes on a batch x (B, ``*data_shape``), scaled
        to ``num_data`` rows like :attr:`loss` (a family with :meth:`players` defines it)."""
        raise NotImplementedError(f"{type(self).__name__} is not trained in turns")

    @property
    def training_objective(self) -> str:
        """What ``FitResult.losses`` are, in words (a run report's ``training.loss``): by
        default the negative ELBO of :attr:`loss`, in nats per example."""
        return f"negative ELBO ({type(self.loss).__name__}), nats per example"

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``type(self)(**config)`` rebuilds it.

        Derived the same way for every family, from the constructor's signature (as
        scikit-learn's ``get_params``): each argument named there (those a subclass passes
        on through ``**options`` are resolved through its parent's signature, see
        :meth:`config_names`) is read back from the attribute of the same name, which the
        constructor sets to the value it resolved (a default of None replaced by what it
        stands for). Where that attribute is the network built from the argument, the
        argument itself is kept in ``<name>_kind`` (``"mlp"``, or ``"custom"`` for a module
        passed in). Values are made JSON-serialisable: tuples and tensors become lists, a
        pyrogen model becomes ``{"family": ..., "config": ...}``.
        """
        return {
            name: _config_value(name, self._config_attribute(name)) for name in self.config_names()
        }

    @classmethod
    def config_names(cls) -> list[str]:
        """The constructor's argument names, in order; a ``**options`` catch-all stands for
        the arguments of the parent's constructor that the subclass does not name itself."""
        return [parameter.name for parameter in _constructor_parameters(cls)]

    def _config_attribute(self, name: str) -> Any:
        """The value the constructor stored for argument ``name`` (see :attr:`config`)."""
        value = getattr(self, name, _MISSING)
        if isinstance(value, torch.nn.Module) and not isinstance(value, GenerativeModel):
            name = f"{name}_kind"  # the network built from it: the argument is kept here
            value = getattr(self, name, _MISSING)
        if value is _MISSING:  # not AttributeError: nn.Module would report `config` missing
            raise TypeError(
                f"config: expected {type(self).__name__} to store its constructor argument "
                f"as self.{name}, found none"
            )
        return value

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

    # --- evaluation and reporting: what a family reports, declared once -------------------
    #: Named parts of the ELBO the family reports per example beside it (keys of
    #: :meth:`score_examples`), e.g. ``("reconstruction", "prior", "diffusion")``.
    elbo_terms_reported: ClassVar[tuple[str, ...]] = ()
    #: What ``num_samples`` of :meth:`score_examples` counts, as the option that sets it:
    #: ``"iw_samples"`` (importance samples of the bound L_K) or ``"step_samples"``.
    score_samples_name: ClassVar[str] = "iw_samples"
    #: The ``num_samples`` scoring uses when none is given.
    default_score_samples: ClassVar[int] = DEFAULT_IW_SAMPLES

    @property
    def exact_likelihood(self) -> bool:
        """Whether ``log_prob(x)`` is the exact log-likelihood; otherwise the family
        reports bounds (``elbo`` and the importance-weighted ``log_likelihood``)."""
        return False

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The plots a run report draws for this model, by file stem (``"elbo"``,
        ``"clusters"``, ``"weights_posterior"``, ``"samples"``, ``"class_samples"``,
        ``"component_samples"``, ``"completions"``, ``"reconstructions"``, ``"latent"``,
        ``"energy"``); the report draws those its data allow (image plots only for image
        data, the energy landscape only for 2-D data)."""
        return ("elbo",)

    @property
    def conditions_on_labels(self) -> bool:
        """Whether the likelihood is conditional on labels y (log p(x | y)), so that
        scoring it and drawing from it need them: by default, whether the model was built
        with ``num_classes`` (a family whose labels are latent says False)."""
        return self.num_classes is not None

    @property
    def takes_labels(self) -> bool:
        """Whether training uses labels y (``pyrogen.fit(model, x, y)``): by default those
        of a model conditioned on them (:attr:`conditions_on_labels`); a family that learns
        from labels otherwise (the semi-supervised VAE) says True. :func:`pyrogen.fit`
        refuses labels a model would ignore."""
        return self.conditions_on_labels

    @property
    def given_mask(self) -> torch.Tensor | None:
        """The values of each example the model is given rather than generating (True =
        given), shape ``data_shape``; None where it generates every value."""
        return None

    @property
    def predicts(self) -> str | None:
        """What ``predict(x)`` (N,) returns: ``"class"`` (scored by accuracy against
        labels), ``"component"`` (scored by clustering accuracy), or None (no predict)."""
        return None

    @property
    def label_count(self) -> int | None:
        """How many values the label y of ``sample(n, y)`` takes (classes, or mixture
        components); None where ``sample`` takes no label. By default ``num_classes``."""
        return self.num_classes

    @property
    def label_kind(self) -> str:
        """What a label of ``sample(n, y)`` is: ``"class"`` or ``"component"``."""
        return "class"

    @property
    def label_sample_plots(self) -> tuple[str, ...]:
        """The report's grid of samples by label, ``("class_samples",)`` or
        ``("component_samples",)``, where ``sample(n, y)`` takes labels; else ``()``."""
        return (f"{self.label_kind}_samples",) if self.label_count else ()

    @property
    def label_names(self) -> list[str]:
        """How a report names each of the :attr:`label_count` labels (rows of a grid of
        samples): ``"0"``, ``"1"``, ... unless the family says more (e.g. their weights)."""
        return [str(k) for k in range(self.label_count or 0)]

    @property
    def likelihood_target(self) -> str:
        """What the log-likelihood (and its bounds) is of, e.g. ``"log p(x | y)"``."""
        labels = ", y" if self.conditions_on_labels else ""
        if self.given_mask is not None:
            return f"log p(x_missing | x_given{labels})"
        return "log p(x | y)" if labels else "log p(x)"

    @property
    def elbo_description(self) -> str:
        """How this family's ELBO is computed, for reports (what the bound is made of)."""
        return "ELBO E_q[log p(x | z) + log p(z) - log q(z | x)]"

    def values_per_example(self, x: torch.Tensor) -> int:
        """D, the values of one example (N, ...) that are scored: bits per dimension divide
        by it. Values the model is given are not scored."""
        given = self.given_mask
        values = math.prod(x.shape[1:])
        return values if given is None else values - int(given.sum())

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The exact log-likelihood per example (nats), shape (N,), where
        :attr:`exact_likelihood`; otherwise the family reports bounds."""
        raise NotImplementedError(
            f"{self.family}: has no exact log-likelihood (exact_likelihood is False); use "
            "elbo or log_likelihood"
        )

    def elbo(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The evidence lower bound per example (nats), shape (N,)."""
        raise NotImplementedError(f"{self.family}: has no elbo")

    def log_likelihood(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_samples: int = 1
    ) -> torch.Tensor:
        """The family's best estimate of the log-likelihood per example (nats), shape (N,):
        the exact ``log_prob`` where there is one, else a bound (see :meth:`score_examples`)."""
        if self.exact_likelihood:
            return self.log_prob(x, y) if self.conditions_on_labels else self.log_prob(x)
        raise NotImplementedError(f"{self.family}: has no log_likelihood")

    def bits_per_dim(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_samples: int | None = None
    ) -> torch.Tensor:
        """-log_likelihood / (D ln 2) per example, shape (N,), D = :meth:`values_per_example`:
        bits per value (an upper bound in expectation where log_likelihood is a lower bound).

        Args:
            x: examples (N, ``*data_shape``).
            y: labels (N,) where the family takes them, else None.
            num_samples: passed to :meth:`log_likelihood`; None: that method's own default
                (e.g. K = 1000 importance samples for the VAEs).
        """
        x = torch.as_tensor(x)
        options = {} if num_samples is None else {"num_samples": num_samples}
        log_likelihood = self.log_likelihood(x, y, **options)
        return -log_likelihood / (self.values_per_example(x) * math.log(2))

    def score_examples(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, num_samples: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Everything the family reports of each example, the one place scoring is done.

        Args:
            x: examples (N, ``*data_shape``).
            y: labels (N,) of a model conditioned on them (:attr:`conditions_on_labels`),
                else None.
            num_samples: what :attr:`score_samples_name` names (importance samples K of the
                bound L_K, or diffusion steps drawn per example); None:
                :attr:`default_score_samples`. Unused where the likelihood is exact.

        Returns:
            per-example tensors, each (N,): ``log_likelihood`` (exact, or the tightest bound
            computed); for families with bounds ``elbo`` and the terms named in
            :attr:`elbo_terms_reported`; ``predicted`` (int64) where :attr:`predicts`.
            :meth:`score_descriptions` says what each one is.
        """
        samples = self.default_score_samples if num_samples is None else num_samples
        condition = (y,) if self.conditions_on_labels else ()
        if self.exact_likelihood:
            scores = {"log_likelihood": self.log_prob(x, *condition)}
        else:
            scores = {
                "elbo": self.elbo(x, *condition),
                "log_likelihood": self.log_likelihood(x, *condition, num_samples=samples),
            }
        if self.predicts is not None:
            scores["predicted"] = self.predict(x)
        return scores

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """What each number of :meth:`score_examples` is (a bound of what, estimated how),
        keyed as there, plus ``bits_per_dim``.

        Args:
            num_samples: the ``num_samples`` the scores were computed with.
            values: D of :meth:`values_per_example`.
        """
        target = self.likelihood_target
        if self.exact_likelihood:
            return {"log_likelihood": f"exact {target}"}
        missing = " (the missing ones)" if self.given_mask is not None else ""
        return {
            "elbo": f"{self.elbo_description}: a lower bound on {target}",
            "log_likelihood": f"IWAE bound L_K with K = {num_samples} importance samples: "
            f"below {target} in expectation",
            "bits_per_dim": f"-log_likelihood_per_example / (D ln 2), D = {values} values per "
            f"example{missing}: an upper bound in expectation",
        }

    def fit_statistics(
        self, x: torch.Tensor, log_likelihood: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Family-specific statistics of a fit on ``x`` (N, ...) for summaries (e.g. a
        mixture's BIC, weights and means), JSON-serialisable; ``log_likelihood`` (N,) is
        each row's exact log-likelihood where the caller has it already."""
        return {}

    #: How :meth:`report_samples` draws, for the titles of plots: ``"draws"``, ``"decoder
    #: means"``, ``"DDIM"``.
    report_samples_name: ClassVar[str] = "draws"

    def report_samples(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """The ``n`` samples (n, ``*data_shape``) a run report shows: draws from the model
        (families whose draws read poorly, e.g. binary pixels, show their means; see
        :attr:`report_samples_name`)."""
        return self.sample(n) if y is None else self.sample(n, y)

    # --- posteriors over global sites (ArviZ conversion) ---------------------------------
    @property
    def posterior_dims(self) -> dict[str, tuple[str, ...]]:
        """ArviZ dim names of the leading dims of global latent sites, by site name (after
        ``chain`` and ``draw``), e.g. ``{"locs": ("component",)}`` for sites whose first
        dim indexes mixture components; sites not named get ArviZ's default names."""
        return {}

    def derived_posterior(
        self, draws: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, tuple[str, ...]]]:
        """Quantities computed from posterior draws that a posterior summary shows beside the
        sites (e.g. a mixture's covariances from its scales and correlations).

        Args:
            draws: site name -> tensor (S, ``*site_shape``), S draws of the global latent sites.

        Returns:
            name -> (tensor (S, ...), ArviZ dim names of its leading dims after the draw);
            empty by default.
        """
        return {}

    def pointwise_log_likelihood(
        self, x: torch.Tensor, draws: dict[str, torch.Tensor], y: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """log p(x_n | theta_s) of every row under every posterior draw, for ``arviz.loo``
        and ``arviz.waic``; for a model conditioned on labels, of what it observes given
        them (log p(y_n | x_n, theta_s) for a discriminative one).

        Args:
            x: data (N, ...).
            draws: site name -> tensor (S, ``*site_shape``), S draws of the global latent sites.
            y: labels (N,) of a model conditioned on them (:attr:`conditions_on_labels`);
                None (and not passed) for the others.

        Returns:
            (S, N) in nats, or None where the family has no posterior over global sites.
        """
        return None

    @property
    def is_setup(self) -> bool:
        """Whether the model has parameters to train (``setup`` ran or a state was loaded)."""
        return True

    # --- initial values -------------------------------------------------------------------
    @property
    def is_as_built(self) -> bool:
        """Whether every parameter and buffer still has the value its constructor gave it
        (read in the dtype it was built in, so a move to another device or to float64 does
        not count as a change; training, loading or setting a value does)."""
        built = getattr(self, "_built_state", None)
        return built is not None and _fingerprint(self, built) == built

    def initialize(self, seed: int) -> None:
        """Give the parameters and buffers the values the constructor draws after
        ``torch.manual_seed(seed)``, whatever torch's random state was when it ran.

        The constructor is run again with the same arguments under a forked random state
        (torch's global state is left as it was) and its values are copied in, so every
        family and every network it builds, custom initialisations included, is drawn the
        way it was built. Modules passed to the constructor are shared with the rebuilt
        copy, so they keep their weights.

        Args:
            seed: the seed of torch's random state while the constructor runs.

        Raises:
            ValueError: the model was not built through its class (e.g. unpickled from a
                foreign file), so its constructor's arguments are unknown.
        """
        construction = getattr(self, "_construction", None)
        if construction is None:
            raise ValueError(
                f"model: expected a {type(self).__name__} built by its constructor, got one "
                "whose constructor arguments are unknown"
            )
        args, kwargs = construction
        # Once CUDA runs, a constructor may draw there too: every generator is forked and
        # seeded. Before, the CPU's alone: torch.manual_seed would also queue a seed for
        # each backend not yet started (about 0.1 ms, and a change fork_rng does not undo).
        cuda = torch.cuda.is_initialized()
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
            if cuda:
                torch.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(seed)
            fresh = type(self)(*args, **kwargs)
        self.load_state_dict(fresh.state_dict())
        object.__setattr__(self, "_built_state", _fingerprint(self, fresh._built_state))

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
        """Rebuild a model from its ``config`` and a ``state_dict``, checked first.

        The config and the weights are checked before the model is built (see
        :func:`load`): a :class:`ValueError` says what does not fit, and nothing larger than
        :data:`pyrogen.models.checkpoints.MAX_MODEL_VALUES` values is ever allocated.
        """
        custom = [name for name, value in config.items() if value == CUSTOM_MODULE]
        if custom:  # the config records that a module was given, not the module
            given = ", ".join(f"{name}=module" for name in custom)
            raise ValueError(
                f"this {cls.__name__} was saved with a custom {'/'.join(custom)} module: "
                f"rebuild it with {cls.__name__}(..., {given}) and call load_state_dict"
            )
        check_config(cls, config)
        if not isinstance(state_dict, dict):
            raise ValueError(f"state_dict: expected a dict, got {type(state_dict).__name__}")
        held = sum(v.numel() for v in state_dict.values() if isinstance(v, torch.Tensor))
        skeleton, on_cpu = sized_skeleton(cls, config, held)
        check_state(skeleton, state_dict)
        model = skeleton if on_cpu else cls(**config)
        model.load_state_dict(state_dict)
        return model


def _config_value(name: str, value: Any) -> Any:
    """``value`` of constructor argument ``name`` as JSON (lists, dicts, numbers, strings)."""
    if isinstance(value, GenerativeModel):
        return {"family": value.family, "config": value.config}
    if isinstance(value, torch.nn.Module):
        return CUSTOM_MODULE
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_config_value(name, item) for item in value]
    if isinstance(value, dict):
        return {key: _config_value(name, item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"config: argument {name!r} holds a {type(value).__name__}, expected a value that "
        "JSON can hold (numbers, strings, lists, None) or a module"
    )


def load(path: PathLike) -> GenerativeModel:
    """Load any model written by :meth:`GenerativeModel.save` (``weights_only=True``).

    The file is checked before any model is built, so that a damaged, edited or foreign
    file is refused with one :class:`ValueError` naming the file and what is wrong (the
    key, the tensor), rather than failing later or allocating without bound:

    * the payload is a dict with ``family`` (a registered name), ``config`` (a dict) and
      ``state_dict`` (names to dense real tensors);
    * the config names only the family's constructor arguments (those it leaves out take
      the constructor's defaults); its values are numbers, strings, bools, None, lists and
      dicts of the kind each argument takes (an int where the default is an int, a list
      where it is a sequence), integers from 0 to 2**24, floats finite; a nested
      model (a latent diffusion's ``autoencoder``) is checked the same way;
    * the model's size: it is first built on the ``meta`` device (or, for families whose
      constructor computes on values, on the CPU), counting the values it creates, and
      refused before it creates more than 2**31 values (``MAX_MODEL_VALUES`` in
      :mod:`pyrogen.models.checkpoints`) or more than four times the values of the
      ``state_dict`` plus 2**20, with the size in the message;
    * the weights: every name and shape matches the model the config builds (missing,
      unexpected and mismatched entries are named), parameters are finite, and a buffer
      holds NaN only where all of it does (a buffer not set yet).

    Args:
        path: a file written by ``model.save(path)`` or a ``pyrogen.fit`` checkpoint.

    Returns:
        the model, on the CPU, in the state it was saved in.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable checkpoint, or fails a check above.
    """
    name = str(Path(path))
    payload = load_checkpoint(path)
    try:
        cls = check_payload(payload)
        return cls.from_state(payload["config"], payload["state_dict"])
    except ValueError as error:
        raise ValueError(f"checkpoint {name!r}: {error}") from None
    except Exception as error:  # checked above: anything left is reported the same way
        raise ValueError(
            f"checkpoint {name!r}: could not be rebuilt ({type(error).__name__}: {error})"
        ) from error

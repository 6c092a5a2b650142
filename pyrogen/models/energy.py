"""Energy-based models: p(x) = exp(-E(x)) / Z, an unnormalized density as a Pyro model.

The model puts each row x at a site with Lebesgue measure (an improper flat "distribution",
log-density 0) and weights it by ``pyro.factor("energy", -E(x))``::

    model:  x_n ~ Lebesgue(R^D);  factor(-E(x_n))      (guide: empty)

so the model's unnormalized log-joint *is* -E(x): called with ``x=None`` it is a program
over one unobserved x that ``pyro.infer.MCMC(NUTS(ebm.model))`` samples unchanged.
Training is not an ELBO (Z is unknown): ``loss`` is the objective chosen by ``objective``,
each in :mod:`pyrogen.models.energy_objectives` with what it estimates.

Data are standardized inside the model (u = (x - shift) / scale, set from the training
data by ``setup``) and the energy is E(x) = E_net(u) + |u|^2 / (2 c^2) + sum(log scale): the
network in standardized units, a confinement term of width c (``confinement``) that makes
exp(-E) integrable for any network that grows at most linearly (MLPs and convolutions with
SiLU do), and the log-Jacobian, so that Z is the same in data and standardized units and
every number is in the data's own units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import pyro_method
from torch import nn

from pyrogen.checks import as_examples, check_choice, check_int, check_ints, check_number
from pyrogen.models.base import GenerativeModel, data_plate
from pyrogen.models.energy_objectives import (
    ENERGY,
    DenoisingScoreMatching,
    NoiseContrastiveEstimation,
    PersistentContrastiveDivergence,
    QuadratureMaximumLikelihood,
)
from pyrogen.models.energy_sampling import (
    MAX_QUADRATURE_DIMS,
    PartitionEstimate,
    ais_log_partition,
    langevin,
    mala,
    quadrature_grid,
    quadrature_log_partition,
)
from pyrogen.models.vae import check_data_shape
from pyrogen.nn.energy import ENERGIES, build_energy

#: The site of the rows.
OBS = "obs"
#: Training objectives, by name.
OBJECTIVES = ("dsm", "pcd", "nce", "quadrature")
#: Samplers of :meth:`EnergyDensity.sample`.
SAMPLERS = ("mala", "langevin")
# Share of the replay buffer's chains restarted from the base density at each PCD step.
_RESTART_SHARE = 0.05
# Nodes per side of the quadrature grid, by dimension.
_GRID_POINTS = {1: 4096, 2: 512, 3: 96}
# The quadrature objective's training grid, nodes per side by dimension, and its half-width
# (standardized units).
_TRAINING_GRID_POINTS = {1: 1024, 2: 64, 3: 24}
_TRAINING_BOUND = 6.0


class LebesgueMeasure(dist.ImproperUniform):
    """The flat measure on R^D (log-density 0), as the site of an energy model's rows.

    ``sample`` draws from a reference normal N(loc, scale^2) only so that MCMC initialises
    (``init_to_uniform`` and ``init_to_sample`` read a draw); ``log_prob`` is 0 everywhere.
    """

    def __init__(
        self, loc: torch.Tensor, scale: torch.Tensor, batch_shape: tuple[int, ...] = ()
    ) -> None:
        self.loc, self.scale = loc, scale
        super().__init__(dist.constraints.real_vector, torch.Size(batch_shape), loc.shape[-1:])

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return self.loc + self.scale * torch.randn(
            shape, dtype=self.loc.dtype, device=self.loc.device
        )

    def expand(self, batch_shape, _instance=None) -> LebesgueMeasure:
        return LebesgueMeasure(self.loc, self.scale, torch.Size(batch_shape))


class EnergyDensity(GenerativeModel):
    """An energy-based density p(x) = exp(-E(x)) / Z over examples of any shape.

    Args:
        data_shape: shape of one example (an int D means (D,)).
        energy: ``"mlp"``, ``"conv"`` (images (C, H, W)) or your own ``nn.Module`` mapping
            standardized examples (..., ``*data_shape``) to energies (...).
        objective: ``"dsm"`` (denoising score matching, the default: no sampling during
            training, works on any continuous data), ``"pcd"`` (persistent contrastive
            divergence, maximum likelihood with Langevin negatives) or ``"nce"``
            (noise-contrastive estimation against N(shift, scale^2), learning log Z) or
            ``"quadrature"`` (D <= 3: maximum likelihood, log Z by randomized quadrature on
            a grid at every step; see :meth:`training_log_partition`).
        hidden: hidden widths of ``"mlp"``; channels of ``"conv"``.
        noise_levels: DSM's noise levels sigma, in standardized units.
        confinement: c, the width of the quadratic term ``|u|^2 / (2 c^2)`` added to the
            energy so that it is normalizable; None for none (your energy must be).
        buffer_size: PCD's replay buffer of Langevin chains.
        langevin_steps: PCD's Langevin steps per training step.
        langevin_step_size: PCD's Langevin step size h, in standardized units.
        noise_ratio: NCE's noise rows per data row.
        grid_points: the quadrature objective's training grid, nodes per side (default
            1024, 64, 24 for D = 1, 2, 3).
        standardize: shift and scale the data by their training mean and standard
            deviation inside the model.

    Shapes:
        x (N, ``*data_shape``).

    Example:
        >>> ebm = EnergyDensity((2,), hidden=(16,))
        >>> x = ebm.sample(5, steps=10)  # (5, 2)
        >>> ebm.exact_likelihood, ebm.log_prob(x).shape
        (True, torch.Size([5]))
    """

    family = "energy"
    fit_defaults = {"steps": 2000, "lr": 1e-3, "batch_size": 256, "early_stopping": None}
    choices = {"energy": ENERGIES, "objective": OBJECTIVES}
    #: log_likelihood's num_samples is the number of AIS chains (D > 3).
    default_score_samples = 100
    #: Temperatures of the AIS estimate of log Z behind log_prob (D > 3).
    ais_steps = 200

    def __init__(
        self,
        data_shape: Sequence[int] | int,
        energy: str | nn.Module = "mlp",
        objective: str = "dsm",
        *,
        hidden: Sequence[int] = (128, 128),
        noise_levels: Sequence[float] = (0.1,),
        confinement: float | None = 3.0,
        buffer_size: int = 1024,
        langevin_steps: int = 20,
        langevin_step_size: float = 0.01,
        noise_ratio: int = 1,
        grid_points: int | None = None,
        standardize: bool = True,
    ) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self.hidden = check_ints("hidden", hidden)
        self.noise_levels = tuple(check_number("noise_levels", s) for s in noise_levels)
        if not self.noise_levels:
            raise ValueError("noise_levels: expected at least one level, got none")
        self.confinement = None if confinement is None else check_number("confinement", confinement)
        self.buffer_size = check_int("buffer_size", buffer_size)
        self.langevin_steps = check_int("langevin_steps", langevin_steps)
        self.langevin_step_size = check_number("langevin_step_size", langevin_step_size)
        self.noise_ratio = check_int("noise_ratio", noise_ratio)
        features = math.prod(self.data_shape)
        if self.objective == "quadrature" and features > MAX_QUADRATURE_DIMS:
            raise ValueError(
                f"objective: expected data of at most {MAX_QUADRATURE_DIMS} values per example "
                f"for 'quadrature' (its grid has points ** D nodes), got {features}; use 'dsm'"
            )
        default_points = _TRAINING_GRID_POINTS.get(features, 2)
        self.grid_points = check_int(
            "grid_points", default_points if grid_points is None else grid_points
        )
        self.standardize = bool(standardize)
        self.energy_kind = energy if isinstance(energy, str) else "custom"
        self.energy = build_energy(energy, self.data_shape, self.hidden)
        self.register_buffer("data_shift", torch.zeros(features))
        self.register_buffer("data_scale", torch.ones(features))
        if self.objective == "pcd":  # state: a resumed run continues the same chains
            self.register_buffer("replay_buffer", torch.randn(self.buffer_size, features))
        if self.objective == "nce":
            self.log_normalizer = nn.Parameter(torch.zeros(()))
        # log_partition's last estimates, by options, valid while the energy is unchanged
        # (see _energy_version); not state: a loaded model recomputes them.
        self._partition_cache: tuple[tuple, dict[tuple, PartitionEstimate]] = ((), {})

    # --- the energy -----------------------------------------------------------------------
    @property
    def dims(self) -> int:
        """D, the values of one example."""
        return math.prod(self.data_shape)

    def standardized_energy(self, u: torch.Tensor) -> torch.Tensor:
        """``E_net(u) + |u|^2 / (2 c^2)`` of standardized rows u (..., D) -> (...); its
        normalizer is Z, the same as that of :meth:`energy_of` in data units."""
        value = self.energy(u.reshape(*u.shape[:-1], *self.data_shape))
        if self.confinement is not None:
            value = value + (u**2).sum(-1) / (2 * self.confinement**2)
        return value

    def energy_of(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of rows x (..., D) in data units -> (...) (see the module's docstring)."""
        u = (x - self.data_shift) / self.data_scale
        return self.standardized_energy(u) + self.data_scale.log().sum()

    def _log_density(self, u: torch.Tensor) -> torch.Tensor:
        return -self.standardized_energy(u)

    # --- Pyro programs ------------------------------------------------------------------
    @pyro_method
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        """Rows x (N, ``*data_shape``) weighted by exp(-E(x)) (with NCE, exp(-E(x) - log Z)
        with the learned log Z); ``x=None``: one unobserved x (D,), e.g. for NUTS."""
        measure = LebesgueMeasure(self.data_shift, self.data_scale)
        if x is None:
            value = pyro.sample(OBS, measure)
            pyro.factor(ENERGY, self._log_factor(value))
            return value
        flat = x.flatten(1)
        with data_plate(x, num_data):
            pyro.sample(OBS, measure, obs=flat)
            pyro.factor(ENERGY, self._log_factor(flat))
        return flat

    def _log_factor(self, flat: torch.Tensor) -> torch.Tensor:
        log_f = -self.energy_of(flat)
        return log_f - self.log_normalizer if self.objective == "nce" else log_f

    @pyro_method
    def guide(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_data: int | None = None,
    ) -> None:
        """Empty: x is observed, and there are no other latent sites."""

    @property
    def loss(
        self,
    ) -> (
        DenoisingScoreMatching
        | PersistentContrastiveDivergence
        | NoiseContrastiveEstimation
        | QuadratureMaximumLikelihood
    ):
        """The objective named by ``objective`` (not an ELBO: see its documentation)."""
        if self.objective == "quadrature":
            return QuadratureMaximumLikelihood(self.training_log_partition)
        if self.objective == "dsm":
            levels = self.data_scale.new_tensor(self.noise_levels)
            return DenoisingScoreMatching(levels, self.data_scale)
        if self.objective == "pcd":
            return PersistentContrastiveDivergence(self.advance_chains)
        noise = dist.Normal(self.data_shift, self.data_scale).to_event(1)
        return NoiseContrastiveEstimation(noise, self.noise_ratio)

    @property
    def training_objective(self) -> str:
        """What the losses of a fit are: the objective's, not an ELBO (see :attr:`loss`)."""
        return f"{type(self.loss).__name__} loss (not an ELBO), nats per example"

    def training_log_partition(self) -> torch.Tensor:
        """log Z as the quadrature objective estimates it at each step, differentiable in
        the energy's parameters: log of h^D sum_i exp(-E(u_i)) over the ``grid_points`` ** D
        nodes u_i of [-6, 6]^D (standardized units), the grid shifted by a uniform random
        fraction of its spacing h drawn from torch's global random state. The sum is then an
        unbiased estimate of Z over the box (randomized quadrature), so the loss does not
        reward a density that slips between fixed nodes; its log is below log Z in
        expectation by about half the sum's squared relative error.

        Returns:
            a scalar tensor (nats).
        """
        tensor_options = {"dtype": self.data_shift.dtype, "device": self.data_shift.device}
        offset = torch.rand(self.dims, **tensor_options)
        grid, spacing = quadrature_grid(
            self.dims,
            bound=_TRAINING_BOUND,
            points=self.grid_points,
            offset=offset,
            **tensor_options,
        )
        log_f = self._log_density(grid)
        return torch.logsumexp(log_f, 0) + self.dims * math.log(spacing)

    # --- data -----------------------------------------------------------------------------
    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int = 0) -> None:
        """Check the data; set the standardization from them (when ``standardize``)."""
        x = self._prepare(x)
        if y is not None:
            raise ValueError("y: an energy model takes no labels, got some")
        if self.standardize:
            flat = x.flatten(1)
            self.data_shift.copy_(flat.mean(0))
            self.data_scale.copy_(flat.std(0).clamp(min=1e-6) if len(flat) > 1 else 1.0)

    def _prepare(self, x: Any, name: str = "x") -> torch.Tensor:
        x = as_examples(x, self.data_shape, dtype=self.data_shift.dtype, name=name)
        return x.to(self.data_shift.device)

    # --- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def advance_chains(self, n: int) -> torch.Tensor:
        """PCD's negatives: n chains of the replay buffer, a few restarted from N(0, I),
        moved ``langevin_steps`` Langevin steps and written back; returns them in data
        units (n, ``*data_shape``).

        Raises:
            DivergedChainsError: a chain left the finite numbers (lower the step size).
        """
        index = torch.randint(self.buffer_size, (n,), device=self.replay_buffer.device)
        u = self.replay_buffer[index]
        restart = torch.rand(n, device=u.device) < _RESTART_SHARE
        u = torch.where(restart.unsqueeze(-1), torch.randn_like(u), u)
        u = langevin(
            self._log_density, u, steps=self.langevin_steps, step_size=self.langevin_step_size
        )
        self.replay_buffer[index] = u
        return self._to_data(u)

    def _to_data(self, u: torch.Tensor) -> torch.Tensor:
        x = self.data_shift + self.data_scale * u
        return x.reshape(-1, *self.data_shape)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        y: Any = None,
        *,
        method: str = "mala",
        steps: int = 500,
        step_size: float = 0.05,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw n examples (n, ``*data_shape``) by Langevin dynamics from N(0, I) (in
        standardized units): n independent chains, their last states.

        Args:
            n: examples to draw.
            y: unused (an energy model has no labels); must be None.
            method: ``"mala"`` (exact invariance; step size adapted to acceptance 0.574
                in the first half of the steps) or ``"langevin"`` (unadjusted, biased by
                O(step_size)).
            steps: steps of each chain.
            step_size: the (initial) step size h, standardized units.
            progress: show a progress bar.
        """
        check_int("n", n)
        check_choice("method", method, SAMPLERS)
        if y is not None:
            raise ValueError("y: an energy model takes no labels, got some")
        u = torch.randn(n, self.dims, dtype=self.data_shift.dtype, device=self.data_shift.device)
        if method == "langevin":
            u = langevin(self._log_density, u, steps=steps, step_size=step_size, progress=progress)
        else:
            u = mala(
                self._log_density, u, steps=steps, step_size=step_size, progress=progress
            ).samples
        return self._to_data(u)

    # --- the normalizer and the likelihood ------------------------------------------------
    def _energy_version(self) -> tuple:
        """What log Z depends on: every parameter and buffer of the energy network (their
        storage, dtype and in-place version counter, which an optimizer step, ``copy_`` or
        ``load_state_dict`` advances) and the confinement. Equal keys, equal log Z."""
        tensors = [*self.energy.parameters(), *self.energy.buffers()]
        return (self.confinement,) + tuple(
            (t.data_ptr(), t.dtype, t.device, t._version) for t in tensors
        )

    @property
    def exact_likelihood(self) -> bool:
        """True for D <= 3, where log Z is computed by quadrature (exact to a stated error);
        above, log Z is an AIS estimate and the likelihood is reported as such."""
        return self.dims <= MAX_QUADRATURE_DIMS

    @torch.no_grad()
    def log_partition(
        self,
        method: str = "auto",
        *,
        bound: float = 10.0,
        points: int | None = None,
        chains: int = 100,
        steps: int | None = None,
        seed: int | None = 0,
        progress: bool = False,
    ) -> PartitionEstimate:
        """log Z of exp(-E(x)) over x in R^D, nats (the same in data and standardized units).

        Args:
            method: ``"quadrature"`` (D <= 3: the midpoint rule on [-bound, bound]^D in
                standardized units, with an error estimate), ``"ais"`` (annealed importance
                sampling from N(0, I), any D: a stochastic lower bound with its standard
                error) or ``"auto"`` (quadrature where D <= 3).
            bound: half-width of the quadrature box, standardized units.
            points: quadrature nodes per side (default 4096, 512, 96 for D = 1, 2, 3).
            chains: AIS chains.
            steps: AIS temperatures (default :attr:`ais_steps`).
            seed: seeds AIS (torch's global random state is left as it was); None draws
                from it.
            progress: show AIS's progress bar.

        The estimate is cached, by these options, for as long as the energy network's
        parameters and buffers are unchanged (their in-place version counters, which an
        optimizer step or ``load_state_dict`` advances): repeated scoring of a fitted model
        computes it once, and the same object is returned. Unseeded AIS is never cached.
        An energy module that reads tensors it does not own (not its parameters or buffers)
        must be changed only together with one of them, or the cache goes stale.

        Returns:
            :class:`~pyrogen.models.energy_sampling.PartitionEstimate`.
        """
        check_choice("method", method, ("auto", "quadrature", "ais"))
        if method == "quadrature" or (method == "auto" and self.exact_likelihood):
            points = _GRID_POINTS.get(self.dims, 2) if points is None else points
            options = ("quadrature", bound, points)
        else:
            steps = self.ais_steps if steps is None else check_int("steps", steps)
            options = ("ais", chains, steps, seed)
        version, cache = self._partition_cache
        if version != (current := self._energy_version()):
            version, cache = current, {}
            self._partition_cache = (version, cache)
        if options in cache:
            return cache[options]
        estimate = self._compute_log_partition(options, progress)
        if options[0] == "quadrature" or seed is not None:  # unseeded AIS is a fresh draw
            cache[options] = estimate
        return estimate

    def _compute_log_partition(self, options: tuple, progress: bool) -> PartitionEstimate:
        tensor_options = {"dtype": self.data_shift.dtype, "device": self.data_shift.device}
        if options[0] == "quadrature":
            _, bound, points = options
            return quadrature_log_partition(
                self._log_density, self.dims, bound=bound, points=points, **tensor_options
            )
        _, chains, steps, seed = options
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            if seed is not None:
                torch.manual_seed(seed)
            return ais_log_partition(
                self._log_density,
                self.dims,
                chains=chains,
                steps=steps,
                progress=progress,
                **tensor_options,
            )

    @torch.no_grad()
    def log_prob(
        self, x: Any, y: Any = None, *, log_partition: PartitionEstimate | None = None
    ) -> torch.Tensor:
        """-E(x) - log Z per example (nats), shape (N,).

        log Z is ``log_partition`` if given, else ``self.log_partition()`` (cached while
        the energy is unchanged, so repeated calls cost one energy evaluation per row), whose
        ``description`` says which it is:

        * D <= 3: quadrature on a grid, exact to its stated ``error`` (an estimated absolute
          error of log Z, hence of every log-density here), so these are exact nats;
        * D > 3: AIS from N(0, I) with 100 chains and :attr:`ais_steps` temperatures, seed 0;
          its ``error`` is the Monte Carlo standard error, and log Z is below the truth in
          expectation, so these log-densities are *above* it in expectation.
        """
        if y is not None:
            raise ValueError("y: an energy model takes no labels, got some")
        x = self._prepare(x)
        estimate = self.log_partition() if log_partition is None else log_partition
        return -self.energy_of(x.flatten(1)) - estimate.log_z

    def log_likelihood(self, x: Any, y: Any = None, *, num_samples: int = 1) -> torch.Tensor:
        """:meth:`log_prob`; for D > 3 with log Z by AIS with ``num_samples`` chains (at
        least 2), an over-estimate in expectation."""
        if self.exact_likelihood:
            return self.log_prob(x, y)
        return self.log_prob(
            x, y, log_partition=self.log_partition("ais", chains=max(2, num_samples))
        )

    def elbo(self, x: Any, y: Any = None) -> torch.Tensor:
        """For D > 3, the AIS estimate of :meth:`log_likelihood` with 100 chains: an energy
        model has no ELBO, and reports this in its place (see :meth:`score_descriptions`)."""
        return self.log_likelihood(x, y, num_samples=self.default_score_samples)

    @property
    def report_plots(self) -> tuple[str, ...]:
        """The loss, and for 2-D data the energy landscape (log p(x) on a grid)."""
        return ("elbo", "energy")

    def score_descriptions(self, num_samples: int, values: int) -> dict[str, str]:
        """Which estimate of log Z each number rests on, and which way it errs."""
        target = self.likelihood_target
        if self.exact_likelihood:
            return {
                "log_likelihood": f"exact {target} = -E(x) - log Z, log Z by quadrature on a "
                "grid (to its stated error, see log_partition())"
            }
        ais = (
            f"{target} = -E(x) - log Z with log Z by AIS ({{}} chains): log Z is below the truth "
            "in expectation, so this is an over-estimate in expectation"
        )
        return {
            "elbo": "not an ELBO (an energy model has none): "
            + ais.format(self.default_score_samples),
            "log_likelihood": ais.format(max(2, num_samples)),
            "bits_per_dim": f"-log_likelihood_per_example / (D ln 2), D = {values}: an "
            "under-estimate in expectation",
        }

    def fit_statistics(
        self, x: torch.Tensor, log_likelihood: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """log Z with its method and error; with NCE, the learned log Z beside it."""
        estimate = self.log_partition()
        stats = {"log_partition": estimate.log_z, "log_partition_error": estimate.error}
        stats["log_partition_method"] = estimate.method
        if self.objective == "nce":
            stats["nce_log_partition"] = self.log_normalizer.item()
        return stats

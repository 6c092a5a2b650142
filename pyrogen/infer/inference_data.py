"""ArviZ ``InferenceData`` from any pyrogen posterior: an SVI guide or MCMC draws.

It sits in the inference layer (MCMC workflows such as :func:`pyrogen.infer.mixture_nuts`
return it) and knows families only through the model contract: ``posterior_dims``,
``derived_posterior`` and ``pointwise_log_likelihood`` of
:class:`~pyrogen.models.GenerativeModel`. :mod:`pyrogen.diagnostics` re-exports it.

Both routes end in the same place: a dict ``site -> (chain, draw, *site_shape)`` of the
model's global latent sites, from which the groups ArviZ's diagnostics need are built
(``posterior``, ``log_likelihood`` for ``arviz.loo`` / ``arviz.waic``, ``observed_data``,
``constant_data`` where the model is conditioned on something it does not model,
``sample_stats`` and, on request, ``posterior_predictive``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import arviz
import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyrogen.checks import as_labels, as_tensor, check_int
from pyrogen.infer.engine import FitResult
from pyrogen.models.base import DATA_PLATE, GenerativeModel

#: Dim names shared by every group, so ArviZ lines variables up across groups.
ROW_DIM = "row"
FEATURE_DIM = "feature"
#: ``constant_data`` names of what a model conditioned on labels is given: the rows x of a
#: discriminative model (which observes the labels), or the labels of a generative one.
ROWS_NAME, LABELS_NAME = "x", "y"

Draws = dict[str, torch.Tensor]


def to_inference_data(
    source: Mapping[str, Any] | FitResult | GenerativeModel,
    data: Any = None,
    *,
    model: GenerativeModel | None = None,
    labels: Any = None,
    num_samples: int = 500,
    seed: int = 0,
    sample_stats: Mapping[str, Any] | None = None,
    posterior_predictive: bool = False,
) -> arviz.InferenceData:
    """Convert a pyrogen posterior to ArviZ ``InferenceData``.

    Args:
        source: one of

            - a dict of posterior draws ``site -> tensor (chains, draws, *site_shape)``,
              e.g. from :func:`pyrogen.infer.run_nuts`; ``model`` is then required;
            - a :class:`~pyrogen.FitResult` (its ``.model`` is used);
            - a fitted model, whose guide is sampled ``num_samples`` times (one chain).
        data: the rows of shape (N, ...) the posterior was conditioned on; required (the
            guide is run on it, and ``observed_data`` / ``log_likelihood`` are built from it).
        model: the model the draws belong to (dict sources only).
        labels: the labels (N,) of ``data``, required for a model conditioned on them
            (``model.conditions_on_labels``: logistic regression observes them), else refused.
        num_samples: draws from the guide (FitResult / model sources).
        seed: seeds the guide draws and the posterior predictive draws.
        sample_stats: per-draw statistics, ``name -> array (chains, draws)``, e.g. the
            ``diverging`` flags of NUTS.
        posterior_predictive: also draw N new rows per posterior draw with
            ``model.sample(N, params=draw)``.

    Returns:
        ``InferenceData`` with groups ``posterior`` (every global latent site, plus the
        model's :meth:`~pyrogen.models.GenerativeModel.derived_posterior`, e.g. a mixture's
        ``covariance``), ``log_likelihood`` (``obs``: chain, draw, row; nats; where the
        model's ``pointwise_log_likelihood`` gives one), ``observed_data`` (``obs``: row,
        ...), ``sample_stats`` when given and ``posterior_predictive`` (``obs``: chain,
        draw, row, ...) when asked for. A discriminative model observes the labels: its
        site ``y`` holds them (``observed_data``; ``log_likelihood``: log p(y_n | x_n,
        theta_s)) and ``constant_data`` the rows ``x``. Leading dims are named by the
        model's ``posterior_dims`` (``component`` for a mixture's per-component sites).

    Raises:
        TypeError: ``source`` or ``model`` is of the wrong type.
        ValueError: ``data`` or (dict source) ``model`` is missing, ``labels`` missing for
            a model conditioned on them (or given to another), an unfitted model, one with
            no global latent sites (a VAE: nothing to convert), or draws / statistics not
            shaped (chain, draw, ...).

    Example:
        >>> import arviz, pyrogen
        >>> from pyrogen.infer.inference_data import to_inference_data
        >>> x = pyrogen.data.old_faithful()
        >>> gmm = pyrogen.GaussianMixture(2, inference="variational")
        >>> result = pyrogen.fit(gmm, x, steps=50, progress=False)
        >>> idata = to_inference_data(result, x, num_samples=100)
        >>> idata.log_likelihood["obs"].shape
        (1, 100, 272)
        >>> loo = arviz.loo(idata)  # PSIS-LOO from the pointwise log-likelihood

        A discriminative model's labels are what it observes: for a fitted
        ``pyrogen.LogisticRegression``, ``to_inference_data(result, x, labels=y)`` holds
        ``log_likelihood["y"]`` of shape (chains, draws, N).
    """
    check_int("num_samples", num_samples)
    model = _source_model(source, model)
    _check_predictive(model, posterior_predictive)
    x, y, sites, observed = _conditioned_data(model, data, labels)
    draws, origin = _posterior_draws(source, model, x, sites, num_samples, seed)
    groups, dims = _posterior_groups(model, x, y, draws, sites, observed)
    chains, per_chain = next(iter(draws.values())).shape[:2]
    if sample_stats is not None:
        groups["sample_stats"] = _checked_stats(sample_stats, chains, per_chain)
    if posterior_predictive:
        groups["posterior_predictive"] = {observed: _numpy(_predictive(model, x, draws))}
    attrs = {"inference_library": "pyro", "inference_library_version": pyro.__version__}
    attrs |= {"pyrogen_family": model.family, "posterior_from": origin}
    # On the whole InferenceData and on the posterior, where ArviZ's own converters put it.
    return arviz.from_dict(**groups, dims=dims, attrs=attrs, posterior_attrs=dict(attrs))


def _check_predictive(model: GenerativeModel, posterior_predictive: Any) -> None:
    if not isinstance(posterior_predictive, bool):
        raise TypeError(
            f"posterior_predictive: expected a bool, got {type(posterior_predictive).__name__}"
        )
    if posterior_predictive and not model.generates_data:
        raise ValueError(
            f"posterior_predictive: expected False for a {type(model).__name__}, which draws "
            "no rows (it models the labels given the rows), got True"
        )


def _posterior_draws(
    source: Any,
    model: GenerativeModel,
    x: torch.Tensor,
    sites: dict[str, dict[str, Any]],
    num_samples: int,
    seed: int,
) -> tuple[Draws, str]:
    """The draws (chain, draw, *site_shape) of every site, and where they come from:
    ``"draws"`` (a dict source, checked and moved to ``x``'s device and dtype) or
    ``"guide"`` (``num_samples`` draws from the model's guide, one chain)."""
    if not isinstance(source, Mapping):
        return _guide_draws(model, x, sites, num_samples, seed), "guide"
    draws = {
        name: value.to(device=x.device, dtype=x.dtype) if value.is_floating_point() else value
        for name, value in _checked_draws(source, sites).items()
    }
    pyro.set_rng_seed(seed)  # the posterior predictive draws
    return draws, "draws"


def _conditioned_data(
    model: GenerativeModel, data: Any, labels: Any
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, dict[str, Any]], str]:
    """``data`` as a tensor on the model's device, its labels (a model conditioned on them;
    else None), the model's global latent sites and the name of its observed site; a
    ValueError where there is no posterior to convert."""
    if not model.is_setup:
        raise ValueError(
            f"model: expected a fitted model (call pyrogen.fit first), got an unfitted "
            f"{type(model).__name__}"
        )
    if data is None:
        raise ValueError(
            "data: expected the (N, ...) rows the posterior is conditioned on, got None"
        )
    x = as_tensor(data, name="data", ndim=None, dtype=_dtype_of(model)).to(model.device)
    y = _checked_labels(model, labels, x.shape[0])
    sites, observed = _model_sites(model, x, y)
    if not sites:
        raise ValueError(
            f"source: expected a model with global latent sites (a posterior to convert, as "
            f"GaussianMixture's), got a {type(model).__name__}, whose latents are per row and "
            "whose network weights are point estimates; score its rows with "
            "pyrogen.diagnostics.score, or convert a plain Pyro model and guide with "
            "pyrogen.from_pyro"
        )
    return x, y, sites, observed


def _checked_labels(model: GenerativeModel, labels: Any, rows: int) -> torch.Tensor | None:
    """The labels (rows,) on the model's device where it is conditioned on them, else None;
    a ValueError where they are missing, unwanted or out of range."""
    if not model.conditions_on_labels:
        if labels is not None:
            raise ValueError(
                f"labels: expected None for a {type(model).__name__} (its likelihood is "
                f"{model.likelihood_target}, not conditioned on labels), got labels"
            )
        return None
    if labels is None:
        raise ValueError(
            f"labels: expected the labels ({rows},) of the data for a {type(model).__name__} "
            f"(its likelihood is {model.likelihood_target}), got None"
        )
    classes = model.num_classes or model.label_count
    return as_labels(labels, rows, classes, name="labels").to(model.device)


def _posterior_groups(
    model: GenerativeModel,
    x: torch.Tensor,
    y: torch.Tensor | None,
    draws: Draws,
    sites: dict[str, dict[str, Any]],
    observed: str,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The ``posterior`` (sites and the model's derived quantities), ``observed_data``,
    ``constant_data`` (with labels) and, where the model gives one, ``log_likelihood``
    groups, with the dims of their variables."""
    chains, per_chain = next(iter(draws.values())).shape[:2]
    flat = _flat(draws)
    posterior = {name: _numpy(value) for name, value in draws.items()}
    dims = {name: list(names) for name, names in model.posterior_dims.items() if name in sites}
    for name, (value, names) in model.derived_posterior(flat).items():
        posterior[name] = _numpy(value.reshape(chains, per_chain, *value.shape[1:]))
        dims[name] = list(names)
    row_dims = [ROW_DIM, FEATURE_DIM] if x.dim() == 2 else [ROW_DIM]
    groups: dict[str, Any] = {"posterior": posterior, "observed_data": {observed: _numpy(x)}}
    dims[observed] = row_dims
    if y is not None:
        # What the model observes (the labels of a discriminative model, else the rows) and
        # what it is given.
        seen, given = (y, x) if not model.generates_data else (x, y)
        given_name = ROWS_NAME if not model.generates_data else LABELS_NAME
        groups["observed_data"] = {observed: _numpy(seen)}
        groups["constant_data"] = {given_name: _numpy(given)}
        dims[observed] = [ROW_DIM] if seen is y else row_dims
        dims[given_name] = [ROW_DIM] if given is y else row_dims
    with torch.no_grad():
        if y is None:
            pointwise = model.pointwise_log_likelihood(x, flat)
        else:
            pointwise = model.pointwise_log_likelihood(x, flat, y)
    if pointwise is not None:
        groups["log_likelihood"] = {
            observed: _numpy(_checked_pointwise(model, pointwise, chains, per_chain, x.shape[0]))
        }
    return groups, dims


def _flat(draws: Draws) -> Draws:
    """Draws (chain, draw, ...) as (chain * draw, ...)."""
    return {name: value.reshape(-1, *value.shape[2:]) for name, value in draws.items()}


def _predictive(model: GenerativeModel, x: torch.Tensor, draws: Draws) -> torch.Tensor:
    """N new rows per posterior draw, ``model.sample(N, params=draw)``: (chain, draw, N, ...)."""
    chains, per_chain = next(iter(draws.values())).shape[:2]
    flat = _flat(draws)
    with torch.no_grad():
        replicas = torch.stack(
            [
                model.sample(x.shape[0], params={name: value[i] for name, value in flat.items()})
                for i in range(chains * per_chain)
            ]
        )
    return replicas.reshape(chains, per_chain, *replicas.shape[1:])


def _source_model(source: Any, model: GenerativeModel | None) -> GenerativeModel:
    """The model behind ``source`` (checking that a given ``model`` does not contradict it)."""
    if isinstance(source, Mapping):
        if model is None:
            raise ValueError(
                "model: expected the GenerativeModel the draws belong to (required for a dict "
                "of draws), got None"
            )
        if not isinstance(model, GenerativeModel):
            raise TypeError(
                f"model: expected a pyrogen GenerativeModel, got {type(model).__name__}"
            )
        return model
    if isinstance(source, FitResult):
        owner = source.model
    elif isinstance(source, GenerativeModel):
        owner = source
    else:
        raise TypeError(
            "source: expected a dict of draws, a FitResult or a fitted GenerativeModel, "
            f"got {type(source).__name__}"
        )
    if model is not None and model is not owner:
        raise ValueError(
            "model: expected None (or the source's own model) for a FitResult or model source, "
            f"got a different {type(model).__name__}"
        )
    return owner


def _model_sites(
    model: GenerativeModel, x: torch.Tensor, y: torch.Tensor | None = None
) -> tuple[dict[str, dict[str, Any]], str]:
    """The model's global latent sites and the name of its observed site (given the labels
    ``y`` of a model conditioned on them).

    Global latent sites are sampled, not observed, and outside the data plate (per-row
    latents such as enumerated assignments are not parameters of the posterior).

    Returns:
        ``(sites, observed)``: trace sites by name, and the observed site's name (``"obs"``
        in every generative family, ``"y"`` in logistic regression).
    """
    # One row suffices to learn the global sites' shapes, whatever N is.
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x[:1], None if y is None else y[:1])
    samples = {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)  # plates are sites too
    }
    latent = {
        name: site
        for name, site in samples.items()
        if not site["is_observed"]
        and all(frame.name != DATA_PLATE for frame in site["cond_indep_stack"])
    }
    observed = [name for name, site in samples.items() if site["is_observed"]]
    return latent, observed[0] if len(observed) == 1 else "obs"


def _guide_draws(
    model: GenerativeModel,
    x: torch.Tensor,
    sites: dict[str, dict[str, Any]],
    num_samples: int,
    seed: int,
) -> Draws:
    """``num_samples`` draws of the global latent sites from the guide, as one chain."""
    pyro.set_rng_seed(seed)
    samples = pyro.infer.Predictive(model.guide, num_samples=num_samples)(x, None)
    missing = sorted(set(sites) - set(samples))
    if missing:
        raise RuntimeError(f"{type(model).__name__}.guide: expected sites {missing}, got none")
    # Predictive pads sites outside plates with size-1 batch dims; restore the site shapes.
    return {
        name: samples[name].detach().reshape(1, num_samples, *site["value"].shape)
        for name, site in sites.items()
    }


def _checked_draws(source: Mapping[str, Any], sites: dict[str, dict[str, Any]]) -> Draws:
    """Validate a dict of draws against the model's sites: all present, (chain, draw, ...)."""
    missing = sorted(set(sites) - set(source))
    if missing:
        raise ValueError(
            f"source: expected draws of every latent site {sorted(sites)}, got none for {missing}"
        )
    draws: Draws = {}
    leading: tuple[int, ...] | None = None
    for name, site in sites.items():
        value = source[name]
        value = (
            value.detach()
            if isinstance(value, torch.Tensor)
            else torch.as_tensor(np.asarray(value))
        )
        site_shape = tuple(site["value"].shape)
        shape = tuple(value.shape)
        if shape[2:] != site_shape or len(shape) != len(site_shape) + 2:
            hint = "; add a chain dim, e.g. value.unsqueeze(0)" if shape[1:] == site_shape else ""
            raise ValueError(
                f"source[{name!r}]: expected draws of shape (chain, draw, *{site_shape}), "
                f"got {shape}{hint}"
            )
        if leading is not None and shape[:2] != leading:
            raise ValueError(
                f"source[{name!r}]: expected (chain, draw) = {leading} like the other sites, "
                f"got {shape[:2]}"
            )
        leading = shape[:2]
        draws[name] = value
    return draws


def _checked_stats(stats: Mapping[str, Any], chains: int, per_chain: int) -> dict[str, np.ndarray]:
    checked = {}
    for name, value in stats.items():
        array = _numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.shape[:2] != (chains, per_chain):
            raise ValueError(
                f"sample_stats[{name!r}]: expected shape ({chains}, {per_chain}, ...) "
                f"(chain, draw), got {array.shape}"
            )
        checked[name] = array
    return checked


def _checked_pointwise(
    model: GenerativeModel, pointwise: torch.Tensor, chains: int, per_chain: int, rows: int
) -> torch.Tensor:
    """The (S, N) pointwise log-likelihood as (chain, draw, row) float64, shape checked."""
    expected = (chains * per_chain, rows)
    if tuple(pointwise.shape) != expected:
        raise RuntimeError(
            f"{type(model).__name__}.pointwise_log_likelihood: expected shape {expected}, "
            f"got {tuple(pointwise.shape)}"
        )
    return pointwise.reshape(chains, per_chain, rows).double()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _dtype_of(model: GenerativeModel) -> torch.dtype:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()

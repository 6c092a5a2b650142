"""The model contract, checked for every family in the registry (see DESIGN.md).

Each family contributes a small instance and data in ``EXAMPLES``; a family missing from it
fails ``test_every_family_has_an_example``, so new families cannot skip the contract.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

import pyrogen
from pyrogen.models import REGISTRY, GenerativeModel


@dataclass
class Example:
    """A small model of one family with data: labels ``y`` and ``sample`` options if needed."""

    model: GenerativeModel
    x: torch.Tensor
    y: torch.Tensor | None = None
    sample_kwargs: dict = field(default_factory=dict)


def _gmm_example(inference: str, covariance: str):
    def make():
        rng = np.random.default_rng(0)
        x = np.concatenate([rng.normal(-2, 0.5, (40, 3)), rng.normal(2, 1.0, (60, 3))])
        model = pyrogen.GaussianMixture(2, covariance=covariance, inference=inference)
        return Example(model, torch.as_tensor(x, dtype=torch.float32))

    return make


def _binary(data_shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(40, *data_shape, generator=generator) > 0.5).float()


def _vae_example(data_shape: tuple[int, ...], family=pyrogen.VAE, **options):
    def make():
        return Example(
            family(data_shape, latent_dim=3, hidden=(16,), **options), _binary(data_shape)
        )

    return make


def _cvae_example(data_shape: tuple[int, ...], **options):
    def make():
        x = _binary(data_shape)
        model = pyrogen.ConditionalVAE(data_shape, latent_dim=3, hidden=(16,), **options)
        y = torch.arange(40) % 3 if model.num_classes else None
        sample_kwargs = {"observed": x[:7]} if model.observed else {}
        return Example(model, x, y, sample_kwargs)

    return make


def _ssvae_example(data_shape: tuple[int, ...], **options):
    def make():
        model = pyrogen.SemiSupervisedVAE(
            data_shape, latent_dim=3, num_classes=3, hidden=(16,), **options
        )
        y = torch.tensor([0, 1, 2, -1, -1] * 8)  # labelled and unlabelled rows in one batch
        return Example(model, _binary(data_shape), y)

    return make


def _flow_example(data_shape: tuple[int, ...], flow: str, **options):
    def make():
        generator = torch.Generator().manual_seed(0)
        if options.get("dequantize"):
            x = torch.randint(0, 256, (40, *data_shape), generator=generator) / 255
        else:
            x = torch.randn(40, *data_shape, generator=generator) * 3 + 1
        model = pyrogen.FlowDensity(data_shape, flow, transforms=2, hidden=(8,), **options)
        y = torch.arange(40) % 3 if options.get("num_classes") else None
        return Example(model, x, y)

    return make


def _diffusion_example(data_shape: tuple[int, ...], likelihood: str = "gaussian", **options):
    def make():
        kwargs = dict(options)
        generator = torch.Generator().manual_seed(0)
        if kwargs.get("autoencoder") == "vae":  # latent diffusion on a small VAE's codes
            kwargs["autoencoder"] = pyrogen.VAE(data_shape, latent_dim=3, hidden=(8,))
            x = _binary(data_shape)
        elif likelihood == "gaussian":
            x = torch.randn(40, *data_shape, generator=generator) * 2 + 1
        elif likelihood == "bernoulli":
            x = _binary(data_shape)
        else:
            x = torch.randint(0, 256, (40, *data_shape), generator=generator) / 255
        model = pyrogen.DiffusionVAE(
            data_shape, likelihood=likelihood, hidden=(16,), channels=8, **kwargs
        )
        y = torch.arange(40) % 3 if kwargs.get("num_classes") else None
        return Example(model, x, y)

    return make


def _autoregressive_example(data_shape: tuple[int, ...], likelihood: str = "bernoulli", **options):
    def make():
        generator = torch.Generator().manual_seed(0)
        if likelihood == "bernoulli":
            x = _binary(data_shape)
        elif likelihood == "categorical":
            x = torch.randint(0, 4, (40, *data_shape), generator=generator) / 3
        else:
            x = torch.randn(40, *data_shape, generator=generator).cumsum(-1) * 2 + 1
        model = pyrogen.AutoregressiveDensity(
            data_shape, likelihood=likelihood, hidden=(16,), channels=8, layers=2, **options
        )
        y = torch.arange(40) % 3 if options.get("num_classes") else None
        return Example(model, x, y)

    return make


def _naive_bayes_example(likelihood: str, inference: str, labels: str = "some"):
    def make():
        generator = torch.Generator().manual_seed(0)
        y = torch.arange(40) % 3
        if likelihood == "gaussian":
            x = torch.randn(40, 4, generator=generator) + y[:, None]
        elif likelihood == "bernoulli":
            x = (torch.rand(40, 4, generator=generator) < 0.2 + 0.3 * y[:, None]).float()
        elif likelihood == "categorical":
            x = torch.randint(0, 3, (40, 4), generator=generator).float()
        else:
            x = torch.poisson(torch.ones(40, 4) + y[:, None], generator=generator)
        if labels == "some":
            y = torch.where(torch.arange(40) % 4 == 0, -1, y)  # semi-supervised
        model = pyrogen.NaiveBayes(3, likelihood, inference)
        return Example(model, x, None if labels == "none" else y)

    return make


def _energy_example(data_shape: tuple[int, ...], **options):
    def make():
        x = torch.randn(40, *data_shape, generator=torch.Generator().manual_seed(0)) * 2 + 1
        model = pyrogen.EnergyDensity(data_shape, hidden=(8,), **options)
        return Example(model, x)

    return make


def _gan_example(data_shape: tuple[int, ...], family=pyrogen.GAN, **options):
    def make():
        x = torch.randn(40, *data_shape, generator=torch.Generator().manual_seed(0)) * 2 + 1
        latent = {"latent_dim": 3} if family is pyrogen.GAN else {}  # a flow's is D
        model = family(data_shape, hidden=(8,), **latent, **options)
        return Example(model, x, torch.arange(40) % 3 if model.num_classes else None)

    return make


def _logistic_regression_example(**options):
    def make():
        generator = torch.Generator().manual_seed(0)
        y = torch.arange(40) % 3
        x = torch.randn(40, 4, generator=generator) + y[:, None]
        return Example(pyrogen.LogisticRegression(3, **options), x, y)

    return make


def _noise_classifier_example(data_shape: tuple[int, ...], likelihood: str = "gaussian", **options):
    def make():
        generator = torch.Generator().manual_seed(0)
        y = torch.arange(40) % 3
        if likelihood == "gaussian":
            x = torch.randn(40, *data_shape, generator=generator) * 2 + 1
        else:
            x = _binary(data_shape)
        model = pyrogen.NoiseConditionalClassifier(
            data_shape, 3, timesteps=10, likelihood=likelihood, hidden=(8,), **options
        )
        return Example(model, x, y)

    return make


def _generates(model: GenerativeModel) -> bool:
    """Whether ``sample`` draws x: not for a discriminative family (logistic regression)."""
    return getattr(model, "generates_data", True)


EXAMPLES = {
    **{
        f"gmm-{inference}-{covariance}": ("gmm", _gmm_example(inference, covariance))
        for inference in ("map", "variational")
        for covariance in ("full", "diag", "spherical", "tied")
    },
    "vae-mlp-bernoulli": ("vae", _vae_example((12,))),
    "vae-mlp-gaussian-iwae": (
        "vae",
        _vae_example((12,), likelihood="gaussian", objective="iwae", num_particles=3),
    ),
    "vae-conv-continuous-bernoulli": (
        "vae",
        _vae_example((1, 8, 8), likelihood="continuous_bernoulli", encoder="conv", decoder="conv"),
    ),
    "vae-iaf-posterior": ("vae", _vae_example((12,), posterior="iaf")),
    "vae-pixelcnn-decoder": (
        "vae",
        _vae_example((1, 5, 5), decoder="pixelcnn", decoder_channels=4, decoder_layers=2),
    ),
    "vae-made-decoder-made-prior-iwae": (
        "vae",
        _vae_example((8,), decoder="made", prior="made", objective="iwae", num_particles=2),
    ),
    "vae-made-prior-gaussian": ("vae", _vae_example((6, 2), likelihood="gaussian", prior="made")),
    "vae-nsf-posterior-iwae": (
        "vae",
        _vae_example((12,), posterior="nsf", objective="iwae", num_particles=2),
    ),
    "cvae-labels": ("cvae", _cvae_example((12,), num_classes=3)),
    "cvae-top-half-conv": (
        "cvae",
        _cvae_example((1, 8, 8), observed="top", encoder="conv", decoder="conv"),
    ),
    "cvae-labels-and-left-half-iwae": (
        "cvae",
        _cvae_example((16,), num_classes=3, observed="left", objective="iwae", num_particles=2),
    ),
    "ssvae-mlp": ("ssvae", _ssvae_example((12,))),
    "ssvae-conv-gaussian": (
        "ssvae",
        _ssvae_example((1, 8, 8), likelihood="gaussian", encoder="conv", decoder="conv"),
    ),
    "ssvae-beta-two-particles": ("ssvae", _ssvae_example((12,), beta=0.5, num_particles=2)),
    "cvae-mask": (
        "cvae",
        _cvae_example((6,), observed=[True, False, True, False, False, False], beta=2.0),
    ),
    "gmvae-mlp": ("gmvae", _vae_example((12,), family=pyrogen.GaussianMixtureVAE)),
    "gmvae-iaf-posterior": (
        "gmvae",
        _vae_example((12,), family=pyrogen.GaussianMixtureVAE, posterior="iaf", n_components=3),
    ),
    "flow-nsf": ("flow", _flow_example((3,), "nsf")),
    "flow-maf-labels": ("flow", _flow_example((3,), "maf", num_classes=3)),
    "flow-realnvp-dequantized-images": (
        "flow",
        _flow_example((1, 4, 4), "realnvp", dequantize=256, logit=0.05),
    ),
    "diffusion-mlp-gaussian": ("diffusion", _diffusion_example((3,), timesteps=10)),
    "diffusion-unet-discretized-labels-learned": (
        "diffusion",
        _diffusion_example(
            (1, 8, 8),
            "discretized",
            timesteps=6,
            schedule="learned",
            num_classes=3,
            label_dropout=0.5,  # the null label's embedding sees rows in every batch
        ),
    ),
    "diffusion-full-trace-bernoulli-v": (
        "diffusion",
        _diffusion_example(
            (12,), "bernoulli", timesteps=4, objective="full", prediction="v", schedule="linear"
        ),
    ),
    "diffusion-latent-on-a-vae": (
        "diffusion",
        _diffusion_example((12,), timesteps=5, autoencoder="vae"),
    ),
    "autoregressive-made-order-agnostic": (
        "autoregressive",
        _autoregressive_example((12,), num_masks=3),
    ),
    "autoregressive-made-categorical-labels": (
        "autoregressive",
        _autoregressive_example((2, 3), "categorical", network="made", levels=4, num_classes=3),
    ),
    "autoregressive-pixelcnn-labels": (
        "autoregressive",
        _autoregressive_example((1, 6, 6), num_classes=3, kernel_size=3),
    ),
    "autoregressive-causal-conv-logistic-mixture": (
        "autoregressive",
        _autoregressive_example((2, 8), "logistic_mixture", network="causal_conv"),
    ),
    "autoregressive-causal-conv-gaussian": (
        "autoregressive",
        _autoregressive_example((8,), "gaussian", network="causal_conv"),
    ),
    "naive_bayes-gaussian-map-semisupervised": (
        "naive_bayes",
        _naive_bayes_example("gaussian", "map"),
    ),
    "naive_bayes-bernoulli-variational-labelled": (
        "naive_bayes",
        _naive_bayes_example("bernoulli", "variational", "all"),
    ),
    "naive_bayes-categorical-variational-semisupervised": (
        "naive_bayes",
        _naive_bayes_example("categorical", "variational"),
    ),
    "naive_bayes-multinomial-map-labelled": (
        "naive_bayes",
        _naive_bayes_example("multinomial", "map", "all"),
    ),
    "naive_bayes-poisson-map-unsupervised": (
        "naive_bayes",
        _naive_bayes_example("poisson", "map", "none"),
    ),
    "energy-mlp-dsm-two-levels": ("energy", _energy_example((3,), noise_levels=(0.1, 0.5))),
    "energy-mlp-pcd": ("energy", _energy_example((2,), objective="pcd", buffer_size=16)),
    "energy-mlp-nce": ("energy", _energy_example((2,), objective="nce", noise_ratio=2)),
    "energy-mlp-quadrature": (
        "energy",
        _energy_example((2,), objective="quadrature", grid_points=8),
    ),
    "energy-conv-dsm-ais": ("energy", _energy_example((1, 4, 4), energy="conv")),
    "gan-mlp-nonsaturating": ("gan", _gan_example((2,))),
    "gan-conv-wgan-gp-labels": (
        "gan",
        _gan_example(
            (1, 8, 8), generator="conv", discriminator="conv", objective="wgan-gp", num_classes=3
        ),
    ),
    "gan-hinge-r1-no-average": ("gan", _gan_example((3,), objective="hinge", r1=1.0, ema=None)),
    "flowgan-realnvp-hybrid-labels": (
        "flowgan",
        _gan_example(
            (3,), family=pyrogen.FlowGAN, transforms=2, num_classes=3, likelihood_weight=0.1
        ),
    ),
    "logistic_regression-map": ("logistic_regression", _logistic_regression_example()),
    "noise_classifier-mlp-gaussian": ("noise_classifier", _noise_classifier_example((3,))),
    "noise_classifier-conv-bernoulli-cosine": (
        "noise_classifier",
        _noise_classifier_example((1, 8, 8), "bernoulli", schedule="cosine", channels=4),
    ),
    "logistic_regression-variational-hierarchical-intercept-prior": (
        "logistic_regression",
        _logistic_regression_example(
            inference="variational", hierarchical=True, intercept_prior_scale=5.0
        ),
    ),
    "diffusion-simple-x0-images": (
        "diffusion",
        _diffusion_example((6, 5), "bernoulli", timesteps=5, objective="simple", prediction="x0"),
    ),
}


def test_every_family_has_an_example():
    covered = {family for family, _ in EXAMPLES.values()}
    assert covered == set(REGISTRY), (
        f"families without a contract example: {set(REGISTRY) - covered}"
    )


@pytest.fixture(params=sorted(EXAMPLES))
def example(request) -> Example:
    family, make = EXAMPLES[request.param]
    example = make()
    assert isinstance(example.model, REGISTRY[family])
    example.model.setup(example.x, example.y)
    return example


def _latent_sites(trace) -> set[str]:
    """Sample sites that are neither observed nor plates (plates record their indices)."""
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and type(site["fn"]).__name__ != "_Subsample"
    }


def _traces(model, x, y):
    guide = poutine.trace(poutine.enum(model.guide, first_available_dim=-2)).get_trace(x, y)
    enumerated = poutine.enum(poutine.replay(model.model, trace=guide), first_available_dim=-2)
    return poutine.trace(enumerated).get_trace(x, y), guide


def _training_loss(model: GenerativeModel, x: torch.Tensor, y) -> torch.Tensor:
    """What ``fit`` differentiates: the ELBO, or every player's loss of a model trained in
    turns (a GAN), summed."""
    if model.players():
        return sum(model.player_loss(p.name, x, y, len(x)) for p in model.players())
    return model.loss.differentiable_loss(model.model, model.guide, x, y)


def test_site_names_match(example):
    model, x, y = example.model, example.x, example.y
    model_trace, guide_trace = _traces(model, x, y)
    model_latent, guide_latent = _latent_sites(model_trace), _latent_sites(guide_trace)
    if not model.has_likelihood:  # an implicit model infers nothing: z is only drawn
        assert model_latent and not guide_latent
        return
    # sites the model enumerates itself (a guide-enumerated site is also in the guide)
    enumerated = {
        n
        for n in model_latent - guide_latent
        if model_trace.nodes[n]["infer"].get("enumerate") == "parallel"
    }
    assert guide_latent == model_latent - enumerated
    # an exact density (a flow on continuous data) has no latent site and an empty guide
    assert guide_latent or not model_latent, "the guide must cover the latent sites"


def test_elbo_is_finite_and_every_parameter_gets_a_gradient(example):
    model, x, y = example.model, example.x, example.y
    with torch.no_grad():  # move off the initial optimum, where some gradients are exactly 0
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    loss = _training_loss(model, x, y)
    assert math.isfinite(loss.item())
    loss.backward()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # frozen parts (a latent diffusion's autoencoder)
            continue
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, f"{name} has a zero gradient"


def test_raw_svi_runs(example):
    model, x, y = example.model, example.x, example.y
    if not model.has_likelihood:
        pytest.skip(f"{model.family} has no ELBO for Pyro's SVI (it is trained in turns)")
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-3}), model.loss)
    assert all(math.isfinite(svi.step(x, y)) for _ in range(3))


def test_save_load_round_trip(example, tmp_path):
    model, x, y = example.model, example.x, example.y
    pyrogen.fit(model, x, y, steps=3, progress=False)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = pyrogen.load(path)
    assert type(loaded) is type(model)
    assert json.loads(json.dumps(loaded.config)) == model.config
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    losses = []
    for each in (model, loaded):  # the same objective on the same draws
        pyro.set_rng_seed(1)
        losses.append(_training_loss(each, x, y).item())
    assert losses[0] == losses[1]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


def test_checkpoints_load_without_unpickling_code(example, tmp_path):
    model = example.model
    path = tmp_path / "model.pt"
    model.save(path)
    torch.load(path, weights_only=True)  # raises if anything but tensors and plain data


def test_sample_shapes(example):
    model, x = example.model, example.x
    if not _generates(model):
        with pytest.raises(NotImplementedError, match="discriminative"):
            model.sample(7)
        return
    draws = model.sample(7, **example.sample_kwargs)
    assert draws.shape == (7, *x.shape[1:])
    assert torch.isfinite(draws).all()


def test_moves_with_dtype_conversion(example):
    # every parameter and buffer is registered, so .to() converts them all
    model, x, y = example.model, example.x, example.y
    model.double()
    tensors = [*model.parameters(), *model.buffers()]
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    loss = _training_loss(model, x.double(), y).item()
    assert math.isfinite(loss)
    kwargs = {key: value[:3] for key, value in example.sample_kwargs.items()}
    if _generates(model):
        assert model.sample(3, **kwargs).dtype == torch.float64


@pytest.mark.cuda
def test_moves_to_cuda(example):
    model, x, y = example.model, example.x, example.y
    model.to("cuda")
    assert all(t.is_cuda for t in [*model.parameters(), *model.buffers()])
    assert math.isfinite(_training_loss(model, x.cuda(), None if y is None else y.cuda()).item())
    kwargs = {k: v[:3].cuda() for k, v in example.sample_kwargs.items()}
    assert model.sample(3, **kwargs).is_cuda


# A latent diffusion model's autoencoder is a model passed in, which keeps its weights (see
# GenerativeModel.initialize): built twice from different random states, it differs.
_BUILT_FROM_SEED = sorted(name for name in EXAMPLES if name != "diffusion-latent-on-a-vae")


@pytest.mark.parametrize("name", _BUILT_FROM_SEED)
def test_same_seed_same_result_from_any_random_state(name):
    # Two models built from different random states, trained with the same seed: the seed
    # draws their initial values, so the runs are identical to the last bit.
    results = []
    for state in (1, 2):
        torch.manual_seed(state)
        example = EXAMPLES[name][1]()
        result = pyrogen.fit(example.model, example.x, example.y, steps=2, seed=5, progress=False)
        results.append((result.losses, example.model.state_dict()))
    (losses_1, state_1), (losses_2, state_2) = results
    assert losses_1 == losses_2
    for (key, a), b in zip(state_1.items(), state_2.values(), strict=True):
        assert torch.equal(a, b), key


# --- the constructor's arguments and config ---------------------------------------------------
VAE_VARIANTS = (pyrogen.ConditionalVAE, pyrogen.SemiSupervisedVAE, pyrogen.GaussianMixtureVAE)


def test_config_rebuilds_the_model(example):
    model = example.model
    config = json.loads(json.dumps(model.config))  # JSON as it is written to a checkpoint
    assert list(config) == type(model).config_names()
    rebuilt = type(model)(**config)
    assert rebuilt.config == model.config
    shapes = {name: value.shape for name, value in model.state_dict().items()}
    assert {name: value.shape for name, value in rebuilt.state_dict().items()} == shapes


@pytest.mark.parametrize("variant", VAE_VARIANTS, ids=lambda cls: cls.__name__)
def test_vae_variants_take_every_vae_argument(variant):
    # Every VAE argument reaches the variant, which names only data_shape and those whose
    # default it changes itself: the rest pass through **vae_options.
    own = inspect.signature(variant).parameters
    listed = inspect.signature(variant.__init__).parameters
    for name, parameter in inspect.signature(pyrogen.VAE).parameters.items():
        assert name in own, f"{variant.__name__} does not take VAE's {name}"
        if name in listed and name != "data_shape":
            assert listed[name].default != parameter.default, f"{name} is re-listed as it is"
        elif name not in listed:
            assert own[name].default == parameter.default, name
    assert any(p.kind is p.VAR_KEYWORD for p in listed.values())
    assert set(variant.config_names()) == set(own)


@pytest.mark.parametrize("variant", VAE_VARIANTS, ids=lambda cls: cls.__name__)
def test_vae_arguments_reach_the_variants(variant):
    options = {"num_classes": 3} if variant is not pyrogen.GaussianMixtureVAE else {}
    passed = {
        "latent_dim": 3,
        "likelihood": "gaussian",
        "hidden": (8, 4),
        "beta": 0.5,
        "num_particles": 2,
        "flow_transforms": 3,
    }
    model = variant((5,), **options, **passed)
    for name, value in passed.items():
        assert getattr(model, name) == value, name
        assert model.config[name] == (list(value) if isinstance(value, tuple) else value)
    assert model.encoder.net[0].in_features == 5 + model.context_dim  # hidden reached it
    assert model.encoder.net[0].out_features == 8


def test_semisupervised_vae_weighs_the_kl_of_z_by_beta():
    x = _binary((12,))
    y = torch.tensor([0, 1, 2, -1, -1] * 8)
    losses = {}
    for beta in (1.0, 3.0):
        torch.manual_seed(0)
        model = pyrogen.SemiSupervisedVAE((12,), latent_dim=3, num_classes=3, beta=beta)
        traces = []
        for program in (model.guide, model.model):
            pyro.set_rng_seed(0)
            trace = poutine.trace(
                program if not traces else poutine.replay(program, trace=traces[0])
            ).get_trace(x, y)
            traces.append(trace)
        for trace in traces:
            trace.compute_log_prob()
        losses[beta] = {
            name: traces[1].nodes[name]["scale"] for name in ("z_labelled", "z_unlabelled")
        }
    assert losses[1.0] == {"z_labelled": 1.0, "z_unlabelled": 1.0}
    assert losses[3.0] == {"z_labelled": 3.0, "z_unlabelled": 3.0}


@pytest.mark.parametrize(
    "variant, options, message",
    [
        (
            pyrogen.SemiSupervisedVAE,
            {"posterior": "iaf"},
            r"posterior: SemiSupervisedVAE supports 'gaussian' only, got 'iaf'",
        ),
        (
            pyrogen.SemiSupervisedVAE,
            {"objective": "iwae"},
            r"objective: SemiSupervisedVAE supports 'elbo' only, got 'iwae'",
        ),
        (
            pyrogen.GaussianMixtureVAE,
            {"objective": "mean_field"},
            r"objective: GaussianMixtureVAE supports 'elbo' only, got 'mean_field'",
        ),
        (pyrogen.ConditionalVAE, {"num_classes": 2, "beta": -1}, r"beta: expected a positive"),
        (pyrogen.ConditionalVAE, {"num_classes": 2, "objective": "x"}, r"objective: expected one"),
        (pyrogen.SemiSupervisedVAE, {"latent_dims": 3}, r"unexpected keyword argument"),
    ],
)
def test_vae_variants_name_what_they_cannot_take(variant, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        variant((4,), **options)


@pytest.mark.parametrize("family", [pyrogen.VAE, *VAE_VARIANTS], ids=lambda cls: cls.__name__)
def test_vaes_need_a_data_shape(family):
    with pytest.raises(TypeError, match="data_shape"):
        family()


# Configs as checkpoints written before config was derived from the constructor hold them:
# the semi-supervised VAE without beta, objective, posterior and flow_transforms, the mixture
# VAE without objective, the conditional VAE's mask as nested lists.
OLD_CONFIGS = {
    "ssvae": {
        "data_shape": [4],
        "latent_dim": 2,
        "likelihood": "bernoulli",
        "encoder": "mlp",
        "decoder": "mlp",
        "hidden": [8],
        "num_particles": 1,
        "num_classes": 3,
        "classifier": "mlp",
        "classifier_weight": 250.0,
        "labelled_share": 0.1,
    },
    "gmvae": {
        "data_shape": [4],
        "latent_dim": 2,
        "likelihood": "bernoulli",
        "encoder": "mlp",
        "decoder": "mlp",
        "hidden": [8],
        "beta": 1.0,
        "num_particles": 1,
        "posterior": "gaussian",
        "flow_transforms": 2,
        "n_components": 3,
    },
    "cvae": {
        "data_shape": [4],
        "latent_dim": 2,
        "likelihood": "bernoulli",
        "encoder": "mlp",
        "decoder": "mlp",
        "hidden": [8],
        "beta": 1.0,
        "objective": "mean_field",
        "num_particles": 1,
        "posterior": "gaussian",
        "flow_transforms": 2,
        "num_classes": None,
        "observed": [True, False, True, False],
        "conditional_prior": True,
    },
}


@pytest.mark.parametrize("family", sorted(OLD_CONFIGS))
def test_checkpoints_written_before_derived_configs_still_load(family, tmp_path):
    from pyrogen.io import save_checkpoint

    config = OLD_CONFIGS[family]
    state = REGISTRY[family](**config).state_dict()
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"family": family, "config": config, "state_dict": state})
    loaded = pyrogen.load(path)
    assert {key: loaded.config[key] for key in config} == config
    for name, value in state.items():
        assert torch.equal(loaded.state_dict()[name], value), name


# --- evaluation and reporting -------------------------------------------------------------
KNOWN_PLOTS = {
    "elbo",
    "clusters",
    "weights_posterior",
    "samples",
    "class_samples",
    "component_samples",
    "completions",
    "reconstructions",
    "latent",
    "energy",
    "sample_scatter",
}


def _condition(example: Example) -> torch.Tensor | None:
    return example.y if example.model.conditions_on_labels else None


def test_score_examples_keys_shapes_and_descriptions(example):
    model, x = example.model, example.x
    if not model.has_likelihood:
        pytest.skip(f"{model.family} has no likelihood to score (see its sample tests)")
    scores = model.score_examples(x, _condition(example), num_samples=2)
    expected = {"log_likelihood"}
    if not model.exact_likelihood:
        expected |= {"elbo", *model.elbo_terms_reported}
    if model.predicts is not None:
        expected |= {"predicted"}
    assert set(scores) == expected
    for name, value in scores.items():
        assert value.shape == (x.shape[0],), name
        assert torch.isfinite(value.double()).all(), name
    if model.predicts is not None:
        assert scores["predicted"].dtype == torch.int64
    descriptions = model.score_descriptions(2, model.values_per_example(x))
    assert set(scores) - {"predicted"} <= set(descriptions)
    assert all(isinstance(text, str) and text for text in descriptions.values())


def test_bits_per_dim_is_the_log_likelihood_in_bits_per_value(example):
    model, x, y = example.model, example.x, _condition(example)
    if not model.has_likelihood:
        pytest.skip(f"{model.family} has no likelihood to express in bits")
    pyro.set_rng_seed(3)
    torch.manual_seed(3)
    bits = model.bits_per_dim(x, y, num_samples=2)
    pyro.set_rng_seed(3)
    torch.manual_seed(3)
    log_likelihood = model.log_likelihood(x, y, num_samples=2)
    expected = -log_likelihood / (model.values_per_example(x) * math.log(2))
    torch.testing.assert_close(bits, expected)


def test_report_plots_are_known(example):
    plots = example.model.report_plots
    assert plots and plots[0] == "elbo"
    assert set(plots) <= KNOWN_PLOTS, set(plots) - KNOWN_PLOTS


def test_labels_of_samples_are_declared(example):
    model = example.model
    count = model.label_count
    assert model.label_kind in ("class", "component")
    assert len(model.label_names) == (count or 0)
    if {"class_samples", "component_samples"} & set(model.report_plots):
        assert count, "a grid of samples by label needs label_count"
    if count and model.given_mask is None:  # given values: the report draws completions
        draws = model.report_samples(count, torch.arange(count))
        assert draws.shape == (count, *example.x.shape[1:])


def test_posterior_hooks(example):
    # Families with a posterior over global sites (the mixture) say how ArviZ names their
    # dims, what they derive from draws and the pointwise log-likelihood; the rest say none.
    model, x = example.model, example.x
    if model.family == "logistic_regression":  # the pointwise log p(y | x), of the labels
        assert set(model.posterior_dims) == {"weights", "bias"}
        values = model.point_estimates()
        draws = {name: torch.stack([value, value]) for name, value in values.items()}
        pointwise = model.pointwise_log_likelihood(x, draws, example.y)
        torch.testing.assert_close(pointwise[1], model.log_prob(x, example.y))
        return
    if model.family not in ("gmm", "naive_bayes"):
        assert model.posterior_dims == {}
        assert model.derived_posterior({}) == {}
        assert model.pointwise_log_likelihood(x, {}) is None
        return
    values = model.point_estimates()
    draws = {name: torch.stack([value, value]) for name, value in values.items()}
    if model.family == "naive_bayes":  # per class (and feature): no derived quantities
        assert set(model.posterior_dims) == set(values)
        assert all(dims[0] == "class" for dims in model.posterior_dims.values())
        torch.testing.assert_close(model.pointwise_log_likelihood(x, draws)[1], model.log_prob(x))
        assert model.derived_posterior(draws) == {}
        return
    assert set(model.posterior_dims) <= set(values)
    assert all(dims == ("component",) for dims in model.posterior_dims.values())
    pointwise = model.pointwise_log_likelihood(x, draws)
    assert pointwise.shape == (2, x.shape[0])
    torch.testing.assert_close(pointwise[1], model.log_prob(x))
    (covariances, dims), *others = model.derived_posterior(draws).values()
    assert not others
    torch.testing.assert_close(covariances[0], model.covariances_)
    assert dims == (() if model.covariance == "tied" else ("component",))


def test_config_names_an_argument_the_constructor_did_not_store():
    class Forgetful(pyrogen.VAE):
        def __init__(self, data_shape, extra: int = 1, **vae_options):
            super().__init__(data_shape, **vae_options)

    assert Forgetful.config_names()[:2] == ["data_shape", "extra"]
    with pytest.raises(TypeError, match=r"config: expected Forgetful to store .* self\.extra"):
        _ = Forgetful((3,)).config


@pytest.mark.parametrize("family", [pyrogen.VAE, pyrogen.FlowDensity, pyrogen.DiffusionVAE])
def test_hidden_widths_are_checked_naming_the_argument(family):
    # Before: "TypeError: 'int' object is not iterable".
    with pytest.raises(ValueError, match=r"^hidden: expected a sequence of positive integers"):
        family((4,), hidden=5)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_checkpoint_checks_size_every_example(name):
    """The model a saved config describes is sized before it is built (on the meta device,
    or on the CPU under a budget), and its state matches the model's names and shapes."""
    from pyrogen.models.checkpoints import check_config, check_state, sized_skeleton

    model = EXAMPLES[name][1]().model
    state = model.state_dict()
    check_config(type(model), model.config)
    held = sum(tensor.numel() for tensor in state.values())
    skeleton, _ = sized_skeleton(type(model), model.config, held)
    check_state(skeleton, state)
    assert {k: v.shape for k, v in skeleton.state_dict().items()} == {
        k: v.shape for k, v in state.items()
    }

"""Damaged and edited checkpoints: ``pyrogen.load`` returns a model or raises one ValueError.

Real files of small models of every family are mutated by a seeded mutator (configs,
weights, families, payloads, bytes); every load must either return a model (only where the
mutation could be harmless) or raise a ValueError naming the file, quickly and without a
large allocation.
"""

from __future__ import annotations

import copy
import io
import math
import random
import resource
import time
from collections import Counter

import pytest
import torch

import pyrogen
from pyrogen.models import REGISTRY

# The sizes that decide the shapes of a model's weights.
SHAPING = ("data_shape", "latent_dim", "hidden", "n_components", "transforms")
# Those of a family that has none of the above (naive Bayes: classes, features, levels).
OTHER_SHAPING = ("num_classes", "n_features", "levels")

# A mutation's verdict: HARMFUL must be refused; MAYBE may load or be refused.
HARMFUL, MAYBE = "harmful", "maybe"


def _models() -> dict[str, pyrogen.models.GenerativeModel]:
    torch.manual_seed(0)
    return {
        "gmm": pyrogen.GaussianMixture(2, n_features=3),
        "gmm-tied-variational": pyrogen.GaussianMixture(
            2, covariance="tied", inference="variational", n_features=2
        ),
        "vae": pyrogen.VAE((6,), latent_dim=2, hidden=(4,)),
        "vae-iaf": pyrogen.VAE((6,), latent_dim=2, hidden=(4,), posterior="iaf"),
        "vae-pixelcnn-made-prior": pyrogen.VAE(
            (1, 3, 3),
            latent_dim=2,
            hidden=(4,),
            decoder="pixelcnn",
            decoder_channels=2,
            decoder_layers=1,
            prior="made",
        ),  # fmt: skip
        "vae-made-decoder": pyrogen.VAE((6,), latent_dim=2, hidden=(4,), decoder="made"),
        "cvae": pyrogen.ConditionalVAE((1, 4, 4), latent_dim=2, hidden=(4,), observed="top"),
        "ssvae": pyrogen.SemiSupervisedVAE((6,), num_classes=2, latent_dim=2, hidden=(4,)),
        "gmvae": pyrogen.GaussianMixtureVAE((6,), n_components=2, latent_dim=2, hidden=(4,)),
        "flow": pyrogen.FlowDensity((3,), "nsf", transforms=1, hidden=(4,)),
        "diffusion": pyrogen.DiffusionVAE((3,), timesteps=4, hidden=(4,), channels=4),
        "diffusion-latent": pyrogen.DiffusionVAE(
            (6,), timesteps=4, hidden=(4,), autoencoder=pyrogen.VAE((6,), latent_dim=2, hidden=(4,))
        ),
        "autoregressive": pyrogen.AutoregressiveDensity((6,), hidden=(4,), num_masks=2),
        "energy": pyrogen.EnergyDensity((3,), hidden=(4,)),
        "gan": pyrogen.GAN((3,), latent_dim=2, hidden=(4,)),
        "flowgan": pyrogen.FlowGAN((3,), transforms=1, hidden=(4,), likelihood_weight=0.5),
        "energy-pcd": pyrogen.EnergyDensity((2,), objective="pcd", hidden=(4,), buffer_size=8),
        "naive_bayes": pyrogen.NaiveBayes(3, "categorical", "variational", n_features=4, levels=3),
        "logistic_regression": pyrogen.LogisticRegression(
            3, hierarchical=True, inference="variational", n_features=4
        ),
        "noise_classifier": pyrogen.NoiseConditionalClassifier((3,), 2, timesteps=4, hidden=(4,)),
    }


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    saved = {}
    for name, model in _models().items():
        path = folder / f"{name}.pt"
        model.save(path)
        saved[name] = torch.load(path, weights_only=True)
    return saved


def test_every_family_is_fuzzed():
    assert {model.family for model in _models().values()} == set(REGISTRY)


# --- mutations: each takes a payload copy and rng, returns (payload or bytes, verdict) --------
def _ints(config):
    return [key for key, value in config.items() if type(value) is int]


def _set_config(payload, key, value):
    payload["config"][key] = value
    return payload


def _huge(payload, rng):
    config = payload["config"]
    keys = _ints(config) + [k for k in SHAPING if isinstance(config.get(k), list)]
    key = rng.choice(keys)
    huge = rng.choice([10**9, 2**40, 10**18])
    value = [huge] * len(config[key]) if isinstance(config[key], list) else huge
    return _set_config(payload, key, value), HARMFUL


def _shaping_keys(config: dict) -> list[str]:
    keys = [key for key in SHAPING if key in config and config[key] is not None]
    return keys or [key for key in OTHER_SHAPING if config.get(key) is not None]


def _negative_size(payload, rng):
    config = payload["config"]
    key = rng.choice(_shaping_keys(config))
    value = rng.choice([-1, -7, 0]) if not isinstance(config[key], list) else [-3]
    if key == "n_components" and value == 0:
        value = -1
    return _set_config(payload, key, value), HARMFUL


def _bigger_size(payload, rng):
    config = payload["config"]
    key = rng.choice(_shaping_keys(config))
    value = config[key]
    value = [v + 1 for v in value] if isinstance(value, list) else value + rng.choice([1, 5])
    return _set_config(payload, key, value), HARMFUL


def _wrong_type(payload, rng):
    key = rng.choice(sorted(payload["config"]))
    value = rng.choice(["seven", [1, "a"], {"a": 1}, True, 1.5, None, [[2]], math.nan])
    harmful = value is not None and not isinstance(value, (bool, float))
    return _set_config(payload, key, value), HARMFUL if harmful else MAYBE


def _non_finite_config(payload, rng):
    config = payload["config"]
    keys = [key for key, value in config.items() if type(value) in (int, float)]
    key = rng.choice(keys)
    return _set_config(payload, key, rng.choice([math.nan, math.inf, -math.inf])), HARMFUL


def _delete_config_key(payload, rng):
    del payload["config"][rng.choice(sorted(payload["config"]))]
    return payload, MAYBE


def _unknown_config_key(payload, rng):
    key = rng.choice(["__class__", "__init__", "extra", "latentdim", ""])
    return _set_config(payload, key, rng.choice([1, "os.system", None])), HARMFUL


def _config_not_a_dict(payload, rng):
    payload["config"] = rng.choice([[1, 2], "config", None, 3, list(payload["config"].items())])
    return payload, HARMFUL


def _other_family(payload, rng):
    others = sorted(set(REGISTRY) - {payload["family"]})
    payload["family"] = rng.choice(others)
    return payload, MAYBE


def _unknown_family(payload, rng):
    payload["family"] = rng.choice(["", "VAE", "os", 3, None, ["vae"]])
    return payload, HARMFUL


def _payload_not_a_dict(payload, rng):
    return rng.choice([[payload["config"]], "vae", 7, torch.zeros(3), None]), HARMFUL


def _payload_key_missing(payload, rng):
    del payload[rng.choice(["family", "config", "state_dict"])]
    return payload, HARMFUL


def _state_name(payload, rng):
    state = payload["state_dict"]
    return rng.choice(sorted(state)) if state else None


def _non_finite_parameter(payload, rng, model):
    names = [name for name, _ in model.named_parameters()]
    name = rng.choice(names)
    tensor = payload["state_dict"][name].clone()
    tensor.view(-1)[rng.randrange(tensor.numel())] = rng.choice([math.nan, math.inf, -math.inf])
    payload["state_dict"][name] = tensor
    return payload, HARMFUL


def _renamed_entry(payload, rng):
    name = _state_name(payload, rng)
    payload["state_dict"][name + rng.choice(["_", ".weight", "x"])] = payload["state_dict"].pop(
        name
    )
    return payload, HARMFUL


def _reshaped_entry(payload, rng):
    name = _state_name(payload, rng)
    tensor = payload["state_dict"][name]
    payload["state_dict"][name] = rng.choice(
        [tensor.reshape(1, *tensor.shape), torch.zeros(tensor.numel() + 1), tensor.reshape(-1)[:0]]
    )
    if payload["state_dict"][name].shape == tensor.shape:
        return payload, MAYBE
    return payload, HARMFUL


def _missing_entry(payload, rng):
    del payload["state_dict"][_state_name(payload, rng)]
    return payload, HARMFUL


def _extra_entry(payload, rng):
    payload["state_dict"][rng.choice(["extra", "encoder.9.weight", "_x"])] = torch.zeros(2)
    return payload, HARMFUL


def _entry_not_a_tensor(payload, rng):
    payload["state_dict"][_state_name(payload, rng)] = rng.choice([[1.0, 2.0], 3, "w", None])
    return payload, HARMFUL


def _entry_dtype(payload, rng):
    name = _state_name(payload, rng)
    tensor = payload["state_dict"][name]
    if not tensor.is_floating_point():
        return payload, MAYBE
    dtype = rng.choice([torch.int64, torch.bool, torch.complex64, torch.float64])
    payload["state_dict"][name] = (
        tensor.to(dtype)
        if dtype is not torch.complex64
        else (torch.complex(tensor.float(), tensor.float()))
    )
    return payload, MAYBE if dtype is torch.float64 else HARMFUL


def _state_not_a_dict(payload, rng):
    payload["state_dict"] = rng.choice([list(payload["state_dict"].values()), None, "w", 1])
    return payload, HARMFUL


def _nested_model(payload, rng):
    nested = payload["config"].get("autoencoder")
    if not isinstance(nested, dict):
        return _bigger_size(payload, rng)
    change = rng.randrange(4)
    if change == 0:
        nested["config"]["latent_dim"] = rng.choice([3, 10**9, -1, "2"])
    elif change == 1:
        nested["family"] = rng.choice(["gmm", "flow", "nope", 1])
    elif change == 2:
        nested["config"]["__class__"] = "x"
    else:
        payload["config"]["autoencoder"] = rng.choice([[1], "vae", {"family": "vae"}])
    return payload, HARMFUL


def _truncated_bytes(data: bytes, rng) -> tuple[bytes, str]:
    return data[: rng.randrange(len(data))], HARMFUL


def _flipped_bytes(data: bytes, rng) -> tuple[bytes, str]:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data), MAYBE


PAYLOAD_MUTATIONS = [
    _huge,
    _negative_size,
    _bigger_size,
    _wrong_type,
    _non_finite_config,
    _delete_config_key,
    _unknown_config_key,
    _config_not_a_dict,
    _other_family,
    _unknown_family,
    _payload_not_a_dict,
    _payload_key_missing,
    _non_finite_parameter,
    _renamed_entry,
    _reshaped_entry,
    _missing_entry,
    _extra_entry,
    _entry_not_a_tensor,
    _entry_dtype,
    _state_not_a_dict,
    _nested_model,
]
BYTE_MUTATIONS = [_truncated_bytes, _flipped_bytes]
ROUNDS = 1  # each mutation once per saved model and round, with the rng's own choices


def _mutated(payload, mutation, rng, model):
    payload = copy.deepcopy(payload)
    if mutation is _non_finite_parameter:
        return mutation(payload, rng, model)
    if mutation in (_renamed_entry, _reshaped_entry, _missing_entry, _entry_not_a_tensor):
        if not payload["state_dict"]:
            return _extra_entry(payload, rng)
    if mutation is _entry_dtype and not payload["state_dict"]:
        return _extra_entry(payload, rng)
    return mutation(payload, rng)


def test_mutated_checkpoints_load_or_raise_one_value_error(payloads, tmp_path):
    rng = random.Random(20261206)
    models = _models()
    outcomes = Counter()
    memory_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    count = 0
    for name, original in payloads.items():
        buffer = io.BytesIO()
        torch.save(original, buffer)
        for mutation in (PAYLOAD_MUTATIONS + BYTE_MUTATIONS) * (ROUNDS + 1):
            count += 1
            path = tmp_path / f"{name}-{count}.pt"
            if mutation in BYTE_MUTATIONS:
                data, verdict = mutation(buffer.getvalue(), rng)
                path.write_bytes(data)
            else:
                payload, verdict = _mutated(original, mutation, rng, models[name])
                torch.save(payload, path)
            what = f"{name}, {mutation.__name__}"
            began = time.monotonic()
            try:
                pyrogen.load(path)
            except ValueError as error:
                message = str(error)
                assert str(path) in message, (
                    f"{what}: the message does not name the file: {message}"
                )
                assert "could not be rebuilt" not in message, f"{what}: not checked: {message}"
                outcomes[f"refused {verdict}"] += 1
            else:
                assert verdict == MAYBE, f"{what}: a harmful mutation loaded"
                outcomes["loaded"] += 1
            assert time.monotonic() - began < 10, f"{what}: took {time.monotonic() - began:.1f} s"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory_before
    assert count >= 200
    assert grown < 1_000_000, f"peak memory grew by {grown / 1e6:.1f} GB"
    assert time.monotonic() - started < 60
    print(dict(outcomes), f"{count} mutations in {time.monotonic() - started:.1f} s")
    assert outcomes["refused harmful"] > 100 and outcomes["loaded"] > 0, outcomes


@pytest.mark.parametrize("name", ["vae", "gmm", "diffusion-latent"])
def test_the_original_files_load(payloads, tmp_path, name):
    path = tmp_path / "original.pt"
    torch.save(payloads[name], path)
    model = pyrogen.load(path)
    assert model.family == payloads[name]["family"]


# --- the reproductions of the issue, one by one ------------------------------------------------
def _edited(payloads, tmp_path, name, edit):
    payload = copy.deepcopy(payloads[name])
    edit(payload)
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("vae", lambda p: p["config"].update(latent_dim=3), "shapes differ: .*expected"),
        ("gmm", lambda p: p.update(family="vae"), "unknown argument 'n_components'"),
        ("vae", lambda p: p.update(config=[1, 2]), "'config': expected a dict, got list"),
        ("vae", lambda p: p["config"].update(__class__="VAE"), "unknown argument '__class__'"),
        ("vae", lambda p: p["config"].update(latent_dim=10**9), r"config\['latent_dim'\]"),
        ("vae", lambda p: p["config"].update(latent_dim="2"), "expected int"),
        ("vae", lambda p: p["config"].update(hidden=4), "expected list"),
        ("vae", lambda p: p["state_dict"]["encoder.net.0.weight"].fill_(math.nan), "non-finite"),
        (
            "diffusion-latent",
            lambda p: p["config"]["autoencoder"]["config"].update(latent_dim=10**9),
            r"config\['autoencoder'\]\['config'\]\['latent_dim'\]",
        ),
    ],
)
def test_edited_files_are_refused_with_the_file_and_key_named(
    payloads, tmp_path, name, edit, match
):
    path = _edited(payloads, tmp_path, name, edit)
    with pytest.raises(ValueError, match=match) as error:
        pyrogen.load(path)
    assert str(error.value).startswith(f"checkpoint {str(path)!r}: ")


def test_a_config_too_large_for_the_cap_is_refused_before_it_is_built(payloads, tmp_path):
    weights = {"encoder.net.0.weight": torch.zeros(1)}  # a state that claims to be huge
    payload = copy.deepcopy(payloads["vae"])
    payload["config"].update(data_shape=[2**14, 2**14], hidden=[2**14])
    payload["state_dict"] = {name: torch.zeros(1).expand(2**31) for name in weights}
    path = tmp_path / "huge.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="over the cap of 2,147,483,648"):
        pyrogen.load(path)


def test_from_state_checks_too():
    with pytest.raises(ValueError, match=r"config\['latent_dim'\]: expected int"):
        pyrogen.VAE.from_state({"data_shape": [4], "latent_dim": 2.5}, {})
    with pytest.raises(ValueError, match="missing '_prior_loc', 'encoder.net.0.weight'"):
        pyrogen.VAE.from_state({"data_shape": [4], "latent_dim": 2, "hidden": [3]}, {})


def test_old_files_still_load(tmp_path):
    # A diffusion model saved before fourier_features and the range clip existed.
    path = tmp_path / "old.pt"
    pyrogen.DiffusionVAE((3,), timesteps=4, hidden=(4,), fourier_features=0).save(path)
    payload = torch.load(path, weights_only=True)
    del payload["config"]["fourier_features"]
    del payload["pyrogen_version"]
    state = payload["state_dict"]
    if "sample_low" in state:
        state.pop("sample_low"), state.pop("sample_high")
        state["sample_bound"] = torch.tensor(math.inf)
    torch.save(payload, path)
    assert pyrogen.load(path).family == "diffusion"

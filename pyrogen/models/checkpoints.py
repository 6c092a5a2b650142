"""Checks a checkpoint passes before any model is built from it.

:func:`pyrogen.load` and :meth:`GenerativeModel.from_state` read configs and weights from
files that may be damaged, edited by hand, or written by someone else. Everything here runs
before a model is built on the CPU, and every failure is a :class:`ValueError` that says
what is wrong and where (the command line prints it as one line):

* the payload: a dict whose ``family`` is a registered name, ``config`` a dict and
  ``state_dict`` a dict of named tensors (:func:`check_payload`);
* the config: only the constructor's argument names, values that JSON can hold (a nested
  model as ``{"family", "config"}``, checked the same way), of the kind the argument takes
  (its annotation, else its default's type), integers from 0 to :data:`MAX_CONFIG_INT`
  (:func:`check_config`);
* the size: the model the config describes is first built on the ``meta`` device, which
  allocates nothing; a family whose constructor computes on values (masks, inverse
  transforms) cannot run there, and is built on the CPU instead. Either way the build
  counts the values it creates and is refused, before the call that would go past it,
  above :data:`MAX_MODEL_VALUES` values, or above four times the values the state_dict
  holds plus 2**20 (a model that large could not match the weights anyway)
  (:func:`sized_skeleton`);
* the weights: names and shapes match the model built (missing, unexpected and mismatched
  entries named), parameters are finite, and a buffer holds NaN only where all of it does
  (NaN is what marks a buffer that is not set yet) (:func:`check_state`).
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: The most parameter and buffer values a checkpoint's model may have (2**31, 8 GiB of
#: float32); a larger config is refused before anything is allocated.
MAX_MODEL_VALUES = 2**31

#: The largest integer a config may hold (its integers are sizes, counts and steps, so
#: none is negative either).
MAX_CONFIG_INT = 2**24

#: Seconds of CPU time a model's construction may take while it is sized, before it is
#: refused (CPU time, not wall time, so a busy machine does not refuse a sound checkpoint).
MAX_BUILD_SECONDS = 10.0

_MAX_ITEMS = 100_000  # entries of one list or dict in a config
_MAX_DEPTH = 8  # nesting of lists and dicts in a config
_SHOWN = 3  # entries named per kind of mismatch

_FACTORIES = {
    torch.empty,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.eye,
    torch.arange,
    torch.linspace,
    torch.logspace,
    torch.empty_strided,
}


def check_payload(payload: dict[str, Any]) -> type:
    """Check a loaded file's payload and return the class of its family.

    Raises:
        ValueError: a key is missing or of the wrong type, the family is not registered,
            or the config fails :func:`check_config` (messages do not name the file; the
            caller adds it).
    """
    from pyrogen.models import REGISTRY  # the registry imports the families, which import this

    for key, kind in (("family", str), ("config", dict), ("state_dict", dict)):
        if key not in payload:
            raise ValueError(f"not a pyrogen model file: missing {key!r}")
        if not isinstance(payload[key], kind):
            raise ValueError(
                f"{key!r}: expected a {kind.__name__}, got {type(payload[key]).__name__}"
            )
    version = payload.get("pyrogen_version")
    if version is not None and not isinstance(version, str):
        raise ValueError(f"'pyrogen_version': expected a str, got {type(version).__name__}")
    family = payload["family"]
    if family not in REGISTRY:
        raise ValueError(f"unknown family {family!r}, expected one of {sorted(REGISTRY)}")
    cls = REGISTRY[family]
    check_config(cls, payload["config"])
    _check_state_types(payload["state_dict"])
    return cls


def check_config(cls: type, config: Any, where: str = "config") -> None:
    """Check ``config`` for ``cls(**config)``: names, JSON-like values, kinds, sizes.

    A value that is already a pyrogen model (a latent diffusion's ``autoencoder`` rebuilt
    by its family's ``from_state``) is accepted as it is; one saved as
    ``{"family": ..., "config": ...}`` is checked against its own family.

    Raises:
        ValueError: naming the key (``config['latent_dim']``) and what was expected.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a dict, got {type(config).__name__}")
    parameters = inspect.signature(cls).parameters
    unknown = [key for key in config if key not in parameters]
    if unknown:
        raise ValueError(
            f"{where}: unknown argument {_listed(unknown)} of {cls.__name__}, expected "
            f"among {list(parameters)}"
        )
    for name, value in config.items():
        key = f"{where}[{name!r}]"
        if _is_model(value):
            continue
        _check_json(value, key, 0)
        _check_kind(parameters[name], value, key)
        if isinstance(value, dict) and "family" in value:  # a model saved inside
            _check_nested(value, key)


def _is_model(value: Any) -> bool:
    return isinstance(value, torch.nn.Module) and isinstance(getattr(value, "family", None), str)


def _check_nested(value: dict[str, Any], where: str) -> None:
    from pyrogen.models import REGISTRY  # the registry imports the families, which import this

    family = value["family"]
    if not isinstance(family, str) or family not in REGISTRY:
        raise ValueError(f"{where}['family']: expected one of {sorted(REGISTRY)}, got {family!r}")
    extra = set(value) - {"family", "config"}
    if extra:
        raise ValueError(f"{where}: unknown key {_listed(sorted(extra))}")
    if "config" not in value:
        raise ValueError(f"{where}: expected a saved model's 'family' and 'config', got no config")
    check_config(REGISTRY[family], value["config"], f"{where}['config']")


def _check_json(value: Any, where: str, depth: int) -> None:
    """Values JSON can hold, with bounded integers, finite floats and bounded nesting."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_CONFIG_INT:
            raise ValueError(f"{where}: {value} is out of range (sizes and counts: 0 to 2**24)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value}")
        return
    if isinstance(value, (list, dict)):
        if len(value) > _MAX_ITEMS:
            raise ValueError(f"{where}: {len(value)} entries, at most {_MAX_ITEMS}")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and not isinstance(key, str):
                raise ValueError(f"{where}: expected string keys, got {type(key).__name__}")
            _check_json(item, f"{where}[{key!r}]", depth + 1)
        return
    raise ValueError(
        f"{where}: expected a number, string, bool, None, list or dict, got {type(value).__name__}"
    )


# What a config value may be for each type named in a constructor's annotation.
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "None": (type(None),),
    "nn.Module": (str,),  # a module is saved as "custom"
    "torch.Tensor": (list,),
    "VAE": (dict,),
}


def _allowed(parameter: inspect.Parameter) -> tuple[type, ...] | None:
    """The Python types a config value of ``parameter`` may have; None: not known."""
    annotation = parameter.annotation
    if isinstance(annotation, str) and annotation:
        allowed: list[type] = []
        for token in (part.strip() for part in annotation.split("|")):
            base = token.split("[", 1)[0]
            if base in ("Sequence", "tuple", "list"):
                allowed.append(list)
            elif base == "dict":
                allowed.append(dict)
            elif base in _KINDS:
                allowed.extend(_KINDS[base])
            else:
                return None
        return tuple(allowed)
    default = parameter.default
    if default is parameter.empty or default is None:
        return None
    if isinstance(default, (tuple, list)):
        return (list,)
    return _KINDS.get(type(default).__name__)


def _check_kind(parameter: inspect.Parameter, value: Any, where: str) -> None:
    allowed = _allowed(parameter)
    if allowed is None:
        return
    # bool is an int to Python, never a size or a count here.
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = sorted({kind.__name__ for kind in allowed})
        raise ValueError(
            f"{where}: expected {' or '.join(names)} (as {parameter.annotation or 'its default'}"
            f"), got {type(value).__name__} {_short(value)}"
        )


def _check_state_types(state_dict: dict[Any, Any]) -> None:
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise ValueError(f"'state_dict': expected string names, got {type(name).__name__}")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(
                f"state_dict[{name!r}]: expected a tensor, got {type(tensor).__name__}"
            )
        if tensor.layout != torch.strided or tensor.is_complex() or tensor.is_meta:
            raise ValueError(f"state_dict[{name!r}]: expected a dense real tensor with values")


class _BuildBudget(TorchFunctionMode):
    """Counts the values a constructor creates and refuses, before it runs, a call that
    would take them past ``limit``: factory calls (``torch.empty``, ``zeros``, ``new_ones``,
    ``*_like``, ...) by the size they ask for, element-wise calls by their inputs' broadcast
    shape; other results are counted once made. A construction that runs past
    :data:`MAX_BUILD_SECONDS` of this process's CPU time is refused too."""

    def __init__(self, limit: int, held: int) -> None:
        super().__init__()
        self.limit = limit
        self.held = held  # the values the state_dict holds, for the message
        self.values = 0
        self.started = time.process_time()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if time.process_time() - self.started > MAX_BUILD_SECONDS:
            raise ValueError(f"building the model took over {MAX_BUILD_SECONDS:.0f} s of CPU time")
        asked = _requested(func, args, kwargs)
        if asked is not None:
            self._count(asked)
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if (
            asked is None
            and isinstance(result, torch.Tensor)
            and not name.endswith("_")
            and not result._is_view()
        ):
            self._count(result.numel())
        return result

    def _count(self, values: int) -> None:
        self.values += values
        if self.values > self.limit:
            raise _too_large(self.values, self.held)


_NEW = ("new_empty", "new_zeros", "new_ones", "new_full")


def _requested(func, args: tuple, kwargs: dict[str, Any]) -> int | None:
    """The values a call will create, where its arguments say before it runs (None: not
    known, or not a call that creates values from sizes)."""
    name = getattr(func, "__name__", "")
    try:
        if func in _FACTORIES or name in _NEW:
            if name in _NEW:
                args = args[1:]
            if func is torch.randint:
                args = tuple(arg for arg in args if not isinstance(arg, int))
            if func is torch.eye:
                return int(args[0]) * int(args[1] if len(args) > 1 else args[0])
            if func in (torch.arange, torch.linspace, torch.logspace):
                return None  # bounded by the config's integers
            size = kwargs.get("size", args[0] if args else None)
            if isinstance(size, int):
                size = [arg for arg in args if isinstance(arg, int)]
                size = size[:1] if func is torch.full or name == "new_full" else size
            return math.prod(int(n) for n in size)
        if name.endswith("_like") and args and isinstance(args[0], torch.Tensor):
            return args[0].numel()
        shapes = [arg.shape for arg in args if isinstance(arg, torch.Tensor)]
        if len(shapes) >= 2:
            return math.prod(torch.broadcast_shapes(*shapes))
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None
    return None


def _too_large(values: int, held: int) -> ValueError:
    if values > MAX_MODEL_VALUES:
        return ValueError(
            f"the config describes a model of at least {values:,} values, over the cap of "
            f"{MAX_MODEL_VALUES:,} (pyrogen.models.checkpoints.MAX_MODEL_VALUES)"
        )
    return ValueError(
        f"the config describes a model of at least {values:,} values, far more than the "
        f"{held:,} its state_dict holds"
    )


def sized_skeleton(
    cls: type, config: dict[str, Any], held: int = 0
) -> tuple[torch.nn.Module, bool]:
    """The model ``cls(**config)`` describes, built without allocating more than it may.

    The construction is refused once it has created more than ``4 * held + 2**20`` values
    (``held``: the values of the state_dict to load into it, which a model needing many
    more cannot match) or :data:`MAX_MODEL_VALUES`, whichever is smaller.

    Returns:
        (model, on_cpu): built on the ``meta`` device where the family's constructor can
        run there (``on_cpu`` False: only shapes), else on the CPU under the same budget
        (``on_cpu`` True: the model itself, with its constructor's values).

    Raises:
        ValueError: the constructor refuses the config, or the model is too large, or its
            construction takes too long.
    """
    limit = min(MAX_MODEL_VALUES, 4 * held + 2**20)
    try:
        with torch.device("meta"), _BuildBudget(limit, held):
            skeleton = cls(**config)
        on_cpu = False
    except (NotImplementedError, RuntimeError) as error:
        if "meta" not in str(error).lower() and "nonzero" not in str(error):
            raise ValueError(f"config is not a valid {cls.__name__}: {error}") from error
        skeleton, on_cpu = _budgeted(cls, config, limit, held), True
    except ValueError:
        raise
    except Exception as error:  # a constructor's own refusal, whatever its type
        raise ValueError(f"config is not a valid {cls.__name__}: {error}") from error
    values = sum(tensor.numel() for tensor in skeleton.state_dict().values())
    if values > limit:
        raise _too_large(values, held)
    return skeleton, on_cpu


def _budgeted(cls: type, config: dict[str, Any], limit: int, held: int) -> torch.nn.Module:
    try:
        with _BuildBudget(limit, held):
            return cls(**config)
    except ValueError:
        raise
    except Exception as error:  # a constructor's own refusal, whatever its type
        raise ValueError(f"config is not a valid {cls.__name__}: {error}") from error


def check_state(skeleton: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    """Check ``state_dict`` against the model built from the config (on meta or the CPU).

    Raises:
        ValueError: entries missing, unexpected or of another shape (a few named), a
            parameter with non-finite values, or a buffer partly NaN.
    """
    _check_state_types(state_dict)
    expected = skeleton.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    reshaped = [
        f"{name} {tuple(state_dict[name].shape)} (expected {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    problems = [
        f"{label} {_listed(names)}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shapes differ:", reshaped),
        )
        if names
    ]
    if problems:
        raise ValueError(f"state_dict does not fit the config: {'; '.join(problems)}")
    parameters = {name for name, _ in skeleton.named_parameters()}
    for name, tensor in state_dict.items():
        if expected[name].is_floating_point() != tensor.is_floating_point():
            raise ValueError(
                f"state_dict[{name!r}]: expected a {expected[name].dtype} tensor, "
                f"got {tensor.dtype}"
            )
        if not tensor.is_floating_point():
            continue
        if name in parameters and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"state_dict[{name!r}]: parameter has non-finite values")
        nan = torch.isnan(tensor)
        if name not in parameters and bool(nan.any()) and not bool(nan.all()):
            raise ValueError(f"state_dict[{name!r}]: buffer is partly NaN")


def _listed(names: list[str]) -> str:
    shown = ", ".join(repr(name) if " " not in name else name for name in names[:_SHOWN])
    more = len(names) - _SHOWN
    return f"{shown} (and {more} more)" if more > 0 else shown


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

"""Runs in progress: what ``pyrogen fit`` keeps while it trains, so that ``pyrogen fit
--resume RUN`` continues a run that was stopped (Ctrl-C, SIGTERM, ``kill -9``, a crash).

While the run folder ``RUN`` is being made, its sibling ``RUN.partial/`` holds
``command.json`` (the command's arguments, its working folder and ``RUN``) and
``checkpoint.pt`` (the training state, written every ``--checkpoint-every`` steps and when
interrupted). The finished run replaces it; a resume reads both and continues exactly."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyrogen.diagnostics.report import SUMMARY_FILE
from pyrogen.io import atomic_write, remove_stale_temporaries

PARTIAL_SUFFIX = ".partial"
COMMAND_FILE = "command.json"
CHECKPOINT_FILE = "checkpoint.pt"


def partial_folder(out: Path) -> Path:
    """Where the run ``out`` in progress keeps its command and checkpoint."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


def start_run(out: Path, argv: Sequence[str]) -> Path:
    """Make ``out``'s folder in progress with its ``command.json``; returns the folder.

    Raises:
        ValueError: a run in progress is already there (it names the resume command).
    """
    partial = partial_folder(out)
    if partial.exists():
        raise ValueError(
            f"--out: a run in progress is kept in {str(partial)!r}; continue it with "
            f"`pyrogen fit --resume {out}`, or remove that folder to start afresh"
        )
    try:  # also the probe that the run's folder can be written, before any training
        partial.mkdir(parents=True)
    except OSError as error:
        raise ValueError(
            f"--out: expected a folder that can be created, got {str(out)!r} "
            f"({error.strerror or error})"
        ) from None
    command = {"argv": list(argv), "cwd": os.getcwd(), "out": str(out.absolute())}
    with atomic_write(partial / COMMAND_FILE, "w") as handle:
        json.dump(command, handle, indent=2)
    return partial


def end_run(partial: Path, *, succeeded: bool) -> None:
    """Remove the folder in progress once the run is written, or after a failure that left
    no training state to resume from."""
    if succeeded or not (partial / CHECKPOINT_FILE).exists():
        shutil.rmtree(partial, ignore_errors=True)


def resume_command(out: Path) -> str:
    """The command that continues the run ``out``."""
    return f"pyrogen fit --resume {out}"


def resumed_arguments(path: Path, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments of the run in progress that ``path`` names (the run folder to be, its
    ``.partial`` folder or the checkpoint in it), parsed by ``parser`` as at the start, with
    relative paths taken from the folder the run started in.

    Raises:
        ValueError: ``path`` names no run in progress, a finished run, or a folder whose
            ``command.json`` is not one this command wrote.
    """
    partial = _partial_of(path)
    file = partial / COMMAND_FILE
    command = _read_command(file)
    try:
        args = parser.parse_args(["fit", *command["argv"]])
    except Exception as error:  # a usage error of the stored command
        raise ValueError(f"{file}: expected the arguments of `pyrogen fit`, got {error}") from None
    if getattr(args, "family", None) is None:
        raise ValueError(f"{file}: expected the arguments of `pyrogen fit FAMILY`")
    cwd = Path(command["cwd"])
    for name, value in vars(args).items():
        if isinstance(value, Path) and not value.is_absolute():
            setattr(args, name, cwd / value)
    args.out, args.partial, args.resuming = Path(command["out"]), partial, True
    args.argv = command["argv"]
    if (args.out / SUMMARY_FILE).exists():
        raise ValueError(f"--resume: the run {str(args.out)!r} is finished; nothing to resume")
    remove_stale_temporaries(partial / CHECKPOINT_FILE)
    return args


def _partial_of(path: Path) -> Path:
    """The folder in progress that ``path`` names."""
    if path.is_file():
        partial = path.parent
    elif path.name.endswith(PARTIAL_SUFFIX):
        partial = path
    else:
        partial = partial_folder(path)
    if (partial / COMMAND_FILE).is_file():
        return partial
    if (path / SUMMARY_FILE).is_file():
        raise ValueError(f"--resume: the run {str(path)!r} is finished; nothing to resume")
    raise ValueError(
        f"--resume: expected a run in progress (RUN, RUN{PARTIAL_SUFFIX} or its "
        f"{CHECKPOINT_FILE}), got {str(path)!r}: no {COMMAND_FILE} in {str(partial)!r}"
    )


def _read_command(file: Path) -> dict[str, Any]:
    """``command.json``, checked: ``argv`` a list of strings, ``cwd`` and ``out`` strings."""
    try:
        command = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file}: expected JSON, got invalid JSON ({error})") from None
    fields = {"argv": list, "cwd": str, "out": str}
    if not isinstance(command, dict) or not all(
        isinstance(command.get(key), kind) for key, kind in fields.items()
    ):
        raise ValueError(f"{file}: expected an object with argv (a list), cwd and out (text)")
    if not all(isinstance(part, str) for part in command["argv"]):
        raise ValueError(f"{file}: 'argv': expected a list of strings")
    return command

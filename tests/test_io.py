"""Atomic writes and safe checkpoint reads."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pyrogen.io import atomic_write, load_checkpoint, save_checkpoint


def test_atomic_write_moves_into_place_with_normal_permissions(tmp_path):
    path = tmp_path / "out.txt"
    previous = os.umask(0o022)
    try:
        with atomic_write(path, "w") as handle:
            handle.write("hello")
            assert not path.exists()  # nothing visible until the block succeeds
    finally:
        os.umask(previous)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"), atomic_write(tmp_path / "a" / "b"):
        pass


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 3, "weights": torch.ones(2)})
    assert load_checkpoint(path, required=("step",))["step"] == 3
    with pytest.raises(ValueError, match="missing \\['family'\\]"):
        load_checkpoint(path, required=("family",))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read safely"):
        load_checkpoint(garbage)


class Payload:
    """An arbitrary object: a weights_only load must refuse to rebuild it."""


def test_checkpoints_refuse_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"object": Payload()}, path)
    with pytest.raises(ValueError, match="could not be read safely"):
        load_checkpoint(path)


def test_temporaries_of_dead_writers_are_removed_and_no_others(tmp_path):
    """A writer killed mid-write (``kill -9``) leaves its temporary file or staging folder;
    the next write of the same path removes it, but never a live process's, another
    machine's or one of unknown origin."""
    import subprocess
    import sys

    from pyrogen.io import remove_stale_temporaries, temporary_prefix

    path = tmp_path / "ck.pt"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip

    def of_dead_writer(kind: str = "") -> str:
        return temporary_prefix(path, kind).replace(f".{os.getpid()}.", f".{gone}.")

    (tmp_path / f"{of_dead_writer()}a1.tmp").write_bytes(b"half")
    (tmp_path / f"{of_dead_writer('stage')}b2.tmp").mkdir()
    other_file = of_dead_writer()[len(".ck.pt.") :]
    kept = [
        f"{temporary_prefix(path)}c3.tmp",
        ".ck.pt.legacy.tmp",
        f".ck.pt.another-host.{gone}.d4.tmp",
        f".other.pt.{other_file}e5.tmp",
    ]
    for name in kept:
        (tmp_path / name).write_bytes(b"x")
    if os.name != "posix":
        assert remove_stale_temporaries(path) == []
        return
    with atomic_write(path) as handle:
        handle.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "ck.pt"])

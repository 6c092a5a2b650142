"""Tests of the file loaders: CSV/TSV, .npy/.npz, IDX, and the format dispatch of load()."""

from __future__ import annotations

import gzip
import io
import re
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrogen.data import load, load_csv, load_idx, load_npy, save


def write_text(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def idx_bytes(code: int, dims: Sequence[int], payload: bytes) -> bytes:
    header = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return header + payload


def write_bytes(folder: Path, name: str, data: bytes, *, compress: bool = False) -> Path:
    path = folder / name
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def assert_small_and_fast(
    action: Callable[[], object], *, max_seconds: float = 1.0, max_bytes: int = 8 << 20
) -> pytest.ExceptionInfo[ValueError]:
    """Run action (which must raise ValueError) under a time and traced-memory budget."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError) as info:
            action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < max_seconds
    assert peak < max_bytes
    return info


# --- CSV -------------------------------------------------------------------------------------

FAITHFUL_LIKE = '"rownames","eruptions","waiting"\n"1",3.6,79\n"2",1.8,54\n"3",3.333,74\n'


def test_csv_quoted_header_skips_rownames(tmp_path):
    result = load_csv(write_text(tmp_path, "f.csv", FAITHFUL_LIKE))
    expected = torch.tensor([[3.6, 79], [1.8, 54], [3.333, 74]], dtype=torch.float32)
    assert result.dtype == torch.float32
    assert torch.equal(result, expected)


def test_csv_skips_pandas_style_unnamed_index(tmp_path):
    path = write_text(tmp_path, "p.csv", ",a,b\n0,1,2\n1,3,4\n")
    assert torch.equal(load_csv(path), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_csv_without_index_takes_every_column(tmp_path):
    path = write_text(tmp_path, "p.csv", "a,b\n1,2\n3,4\n")
    assert load_csv(path).shape == (2, 2)


@pytest.mark.parametrize(
    "columns",
    [
        "waiting,eruptions",
        " waiting , eruptions",
        ["waiting", "eruptions"],
        ("waiting", "eruptions"),
    ],
)
def test_csv_column_selection_keeps_requested_order(tmp_path, columns):
    result = load_csv(write_text(tmp_path, "f.csv", FAITHFUL_LIKE), columns)
    assert torch.equal(result[:, 0], torch.tensor([79.0, 54.0, 74.0]))
    assert torch.allclose(result[:, 1], torch.tensor([3.6, 1.8, 3.333]))


def test_csv_single_column_by_string(tmp_path):
    result = load_csv(write_text(tmp_path, "f.csv", FAITHFUL_LIKE), "waiting")
    assert result.shape == (3, 1)


def test_csv_bom_spaces_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"\xef\xbb\xbf a , b \r\n1, 2\r\n\r\n3 ,4\r\n\r\n")
    assert torch.equal(load_csv(path, ["a", "b"]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_tsv_with_delimiter(tmp_path):
    path = write_text(tmp_path, "t.tsv", "a\tb\n1\t2\n")
    assert torch.equal(load_csv(path, delimiter="\t"), torch.tensor([[1.0, 2.0]]))


def test_csv_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_csv(missing)


def test_path_of_wrong_type():
    with pytest.raises(TypeError, match=r"path: expected a str or os.PathLike, got int"):
        load_csv(3)


def test_csv_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="expected a regular file"):
        load_csv(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_csv_empty_file(tmp_path, text):
    with pytest.raises(ValueError, match=r"e\.csv: empty file: expected a header row"):
        load_csv(write_text(tmp_path, "e.csv", text))


def test_csv_header_only(tmp_path):
    with pytest.raises(ValueError, match=r"h\.csv: no data rows: expected at least one row"):
        load_csv(write_text(tmp_path, "h.csv", "a,b\n"))


def test_csv_unknown_column_lists_available(tmp_path):
    expected = (
        r"f\.csv: unknown column: expected one of 'rownames', 'eruptions', 'waiting', got 'wait'"
    )
    with pytest.raises(ValueError, match=expected):
        load_csv(write_text(tmp_path, "f.csv", FAITHFUL_LIKE), ["eruptions", "wait"])


def test_csv_non_numeric_cell_names_row_column_and_suggests_columns(tmp_path):
    path = write_text(tmp_path, "iris.csv", "x,y,species\n1,2,setosa\n")
    expected = (
        r"iris\.csv, row 2, column 'species': expected a number, got 'setosa'; "
        r"select numeric columns with columns=\['x', 'y'\]"
    )
    with pytest.raises(ValueError, match=expected):
        load_csv(path)


def test_csv_non_numeric_cell_without_suggestion_when_columns_given(tmp_path):
    path = write_text(tmp_path, "c.csv", "x,y\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"row 3, column 'y': expected a number, got 'abc'$"):
        load_csv(path, "x,y")


def test_csv_unselected_text_column_is_ignored(tmp_path):
    path = write_text(tmp_path, "c.csv", "x,name\n1,a\n2,b\n")
    assert torch.equal(load_csv(path, ["x"]), torch.tensor([[1.0], [2.0]]))


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("nan", r"expected a finite number, got 'nan'"),
        ("inf", r"expected a finite number, got 'inf'"),
        ("-Infinity", r"expected a finite number, got '-Infinity'"),
        ("", r"empty cell: expected a number, got ''"),
        ("  ", r"empty cell: expected a number, got ''"),
        ("NA", r"missing value: expected a number, got 'NA'"),
        ("1e39", r"expected a number within float32 range, got '1e39'"),
    ],
)
def test_csv_bad_cells_name_row_and_column(tmp_path, cell, message):
    path = write_text(tmp_path, "c.csv", f"x,y\n1,2\n\n3,{cell}\n")
    # The blank line still counts: rows are numbered as lines of the file.
    with pytest.raises(ValueError, match=rf"c\.csv, row 4, column 'y': {message}"):
        load_csv(path)


def test_csv_ragged_row(tmp_path):
    path = write_text(tmp_path, "r.csv", "a,b,c\n1,2,3\n4,5\n")
    with pytest.raises(ValueError, match=r"r\.csv, row 3: ragged row: expected 3 fields .*got 2"):
        load_csv(path)


def test_csv_malformed_quoting(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b'a,b\n1,"2"x\n')
    with pytest.raises(ValueError, match=r"m\.csv, row \d+: malformed CSV"):
        load_csv(path)


def test_csv_not_utf8(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match=r"b\.csv: expected UTF-8 text"):
        load_csv(path)


@pytest.mark.parametrize(
    ("columns", "error", "message"),
    [
        ("", ValueError, r"columns: expected non-empty column names"),
        ("a,,b", ValueError, r"columns: expected non-empty column names"),
        ([], ValueError, r"columns: expected non-empty column names"),
        (["a", "a"], ValueError, r"columns: expected each column once, got \['a'\]"),
        ([1, 2], TypeError, r"columns: expected column names \(str\), got 1 \(int\)"),
        (3, TypeError, r"columns: expected None, a str or a sequence of str, got int"),
    ],
)
def test_csv_bad_columns_argument(tmp_path, columns, error, message):
    with pytest.raises(error, match=message):
        load_csv(write_text(tmp_path, "c.csv", "a,b\n1,2\n"), columns)


def test_csv_ambiguous_duplicate_header(tmp_path):
    path = write_text(tmp_path, "d.csv", "a,a,b\n1,2,3\n")
    assert load_csv(path, ["b"]).shape == (1, 1)
    with pytest.raises(ValueError, match=r"ambiguous column 'a'.*positions \[0, 1\]"):
        load_csv(path, ["a"])


def test_csv_bad_delimiter(tmp_path):
    with pytest.raises(ValueError, match=r"delimiter: expected a single character, got ';;'"):
        load_csv(write_text(tmp_path, "c.csv", "a\n1\n"), delimiter=";;")


# --- .npy / .npz -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<i4", ">i2", "u1"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_round_trip(tmp_path, dtype, order):
    array = np.asarray(np.arange(24).reshape(2, 3, 4), dtype=dtype, order=order)
    np.save(tmp_path / "a.npy", array)
    result = load_npy(tmp_path / "a.npy")
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.arange(24, dtype=torch.float32).reshape(2, 3, 4))


def test_npz_single_array_needs_no_key(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.eye(3))
    assert torch.equal(load_npy(tmp_path / "one.npz"), torch.eye(3))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_with_key(tmp_path, save):
    save(tmp_path / "two.npz", first=np.ones((2, 2)), second=np.arange(6.0).reshape(3, 2))
    assert torch.equal(
        load_npy(tmp_path / "two.npz", key="second"), torch.arange(6.0).reshape(3, 2)
    )


def test_npz_several_arrays_require_key(tmp_path):
    np.savez(tmp_path / "two.npz", first=np.ones(2), second=np.ones(2))
    with pytest.raises(
        ValueError, match=r"holds several arrays \('first', 'second'\); expected key="
    ):
        load_npy(tmp_path / "two.npz")


def test_npz_unknown_key_lists_keys(tmp_path):
    np.savez(tmp_path / "two.npz", first=np.ones(2), second=np.ones(2))
    with pytest.raises(
        ValueError, match=r"unknown key: expected one of 'first', 'second', got 'third'"
    ):
        load_npy(tmp_path / "two.npz", key="third")


def test_key_for_npy_file_raises(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"key: expected None for the \.npy file .*got 'x'"):
        load_npy(tmp_path / "a.npy", key="x")


def test_non_str_key_raises_type_error(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(TypeError, match=r"key: expected a str or None, got int"):
        load_npy(tmp_path / "a.npy", key=0)


def test_object_array_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(
        ValueError, match=r"o\.npy: expected a numeric array, got dtype object .*pickles"
    ):
        load_npy(tmp_path / "o.npy")


def test_object_array_in_npz_is_refused(tmp_path):
    np.savez(tmp_path / "o.npz", bad=np.array([1, "x"], dtype=object))
    with pytest.raises(
        ValueError, match=r"o\.npz\['bad'\]: expected a numeric array, got dtype object"
    ):
        load_npy(tmp_path / "o.npz")


def test_string_array_is_rejected(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"s\.npy: expected a numeric .*got dtype <U1"):
        load_npy(tmp_path / "s.npy")


def test_npy_with_nan_reports_position(tmp_path):
    array = np.zeros((3, 2))
    array[1, 1] = np.nan
    np.save(tmp_path / "n.npy", array)
    with pytest.raises(
        ValueError, match=r"n\.npy: expected finite values, got nan at row 1, column 1"
    ):
        load_npy(tmp_path / "n.npy")


def test_empty_npy_is_rejected(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"expected at least one row, got shape \(0, 4\)"):
        load_npy(tmp_path / "e.npy")


def test_not_a_numpy_file(tmp_path):
    path = write_text(tmp_path, "fake.npy", "hello, world\n")
    with pytest.raises(
        ValueError, match=r"fake\.npy: expected a \.npy or \.npz file, got an invalid one"
    ):
        load_npy(path)


def test_corrupt_zip(tmp_path):
    path = write_bytes(tmp_path, "bad.npz", b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"bad\.npz: expected a valid \.npz \(zip\) archive"):
        load_npy(path)


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """Magic string, version and header of a .npy file, as numpy writes them."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_truncated_npy_data(tmp_path):
    data = np.arange(6.0).tobytes()[:40]
    path = write_bytes(tmp_path, "t.npy", npy_header((6,)) + data)
    with pytest.raises(
        ValueError, match=r"t\.npy: payload size mismatch: expected 48 bytes .*got 40$"
    ):
        load_npy(path)


def test_npy_trailing_data(tmp_path):
    path = write_bytes(tmp_path, "t.npy", npy_header((2,)) + np.ones(3).tobytes())
    with pytest.raises(ValueError, match=r"expected 16 bytes .*got 24$"):
        load_npy(path)


@pytest.mark.parametrize("name", ["huge.npy", "huge.npz"])
def test_forged_huge_npy_header_raises_without_allocating(tmp_path, name):
    member = npy_header((2**40, 2**20)) + b"\x00" * 10
    if name.endswith(".npz"):
        with zipfile.ZipFile(tmp_path / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("x.npy", member)
    else:
        write_bytes(tmp_path, name, member)
    info = assert_small_and_fast(lambda: load_npy(tmp_path / name))
    assert info.match(rf"expected {2**63} bytes of data .*got 10$")


# --- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_uint8_round_trip(tmp_path, compress):
    pixels = bytes(range(24))
    path = write_bytes(tmp_path, "x-ubyte", idx_bytes(0x08, (2, 3, 4), pixels), compress=compress)
    result = load_idx(path)
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.arange(24, dtype=torch.float32).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("code", "fmt", "values"),
    [
        (0x09, "b", [-128, -1, 0, 127]),
        (0x0B, "h", [-32768, -2, 258, 32767]),
        (0x0C, "i", [-(2**24), -1, 66051, 2**24]),
        (0x0D, "f", [-1.5, 0.25, 3.0e10, 7.0]),
        (0x0E, "d", [-1.5, 0.125, 1e-3, 2.0]),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_big_endian_types(tmp_path, code, fmt, values, compress):
    payload = struct.pack(f">{len(values)}{fmt}", *values)
    path = write_bytes(tmp_path, "v.idx", idx_bytes(code, (2, 2), payload), compress=compress)
    expected = torch.tensor(values, dtype=torch.float64).reshape(2, 2).float()
    assert torch.equal(load_idx(path), expected)


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    data = idx_bytes(0x08, (3,), b"\x01\x02\x03")
    plain_named_gz = write_bytes(tmp_path, "a-ubyte.gz", data)
    gzip_named_plain = write_bytes(tmp_path, "b-ubyte", data, compress=True)
    assert torch.equal(load_idx(plain_named_gz), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(load_idx(gzip_named_plain), torch.tensor([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x08", r"truncated header: expected at least 4 bytes of IDX header, got 3"),
        (b"", r"truncated header: expected at least 4 bytes of IDX header, got 0"),
        (
            b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 2),
            r"truncated header: expected at least 16 bytes of IDX header, got 12",
        ),
        (
            b"\x01\x02\x08\x01\x00\x00\x00\x01\x05",
            r"bad magic, not an IDX file: expected first bytes 00 00, got 01 02",
        ),
        (
            b"\x00\x00\x0a\x01\x00\x00\x00\x01\x05",
            r"unknown IDX dtype code: expected one of 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, got 0x0A",
        ),
        (b"\x00\x00\x08\x00\x05", r"invalid IDX header: expected ndim >= 1, got 0"),
    ],
)
def test_idx_bad_headers(tmp_path, compress, data, message):
    path = write_bytes(tmp_path, "bad-ubyte", data, compress=compress)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_missing_bytes(tmp_path, compress):
    data = idx_bytes(0x0C, (2, 3), struct.pack(">5i", 1, 2, 3, 4, 5))
    path = write_bytes(tmp_path, "m.idx", data, compress=compress)
    expected = (
        r"payload size mismatch: expected 24 bytes of data for shape \(2, 3\) of int32 .*got 20$"
    )
    with pytest.raises(ValueError, match=expected):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_trailing_bytes(tmp_path, compress):
    path = write_bytes(tmp_path, "t.idx", idx_bytes(0x08, (4,), bytes(7)), compress=compress)
    with pytest.raises(ValueError, match=r"expected 4 bytes of data .*got 7$"):
        load_idx(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda gz: gz[: len(gz) // 2],  # cut short: the deflate stream never ends
        lambda gz: gz[:10] + bytes(b ^ 0xFF for b in gz[10:]),  # garbage after a valid header
    ],
    ids=["truncated", "garbled"],
)
def test_idx_corrupt_gzip(tmp_path, damage):
    compressed = gzip.compress(idx_bytes(0x08, (64,), bytes(range(64))))
    path = write_bytes(tmp_path, "c-ubyte.gz", damage(compressed))
    with pytest.raises(ValueError, match=r"c-ubyte\.gz: corrupt or truncated compressed data"):
        load_idx(path)


def test_idx_nan_is_rejected(tmp_path):
    payload = struct.pack(">3f", 1.0, float("nan"), 2.0)
    path = write_bytes(tmp_path, "n.idx", idx_bytes(0x0D, (3,), payload))
    with pytest.raises(ValueError, match=r"expected finite values, got nan at index 1"):
        load_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_bogus_huge_idx_header_raises_quickly_without_allocating(tmp_path, compress):
    data = idx_bytes(0x08, (2**31, 2**31), bytes(10))
    path = write_bytes(tmp_path, "huge-ubyte", data, compress=compress)
    info = assert_small_and_fast(lambda: load_idx(path))
    assert info.match(rf"expected {2**62} bytes of data .*got 10$")


def test_gzip_stream_longer_than_header_stops_early(tmp_path):
    # 64 MiB of zeros compress to ~64 KiB: the reader must stop after the 16 announced bytes.
    data = idx_bytes(0x08, (4, 4), bytes(64 << 20))
    path = write_bytes(tmp_path, "long-ubyte", data, compress=True)
    del data
    info = assert_small_and_fast(lambda: load_idx(path))
    assert info.match(r"expected 16 bytes of data .*got more than 1048592$")


# --- load() dispatch -------------------------------------------------------------------------


def test_load_dispatches_text_formats(tmp_path):
    expected = torch.tensor([[1.0, 2.0]])
    assert torch.equal(load(write_text(tmp_path, "a.csv", "x,y\n1,2\n")), expected)
    assert torch.equal(load(write_text(tmp_path, "a.TSV", "x\ty\n1\t2\n")), expected)
    assert torch.equal(load(write_text(tmp_path, "a.txt", "x,y\n1,2\n")), expected)
    assert torch.equal(
        load(write_text(tmp_path, "b.csv", "x,y\n1,2\n"), columns="y"), expected[:, 1:]
    )


def test_load_dispatches_numpy_formats(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 2)))
    np.savez(tmp_path / "a.npz", p=np.zeros(3), q=np.ones(3))
    assert torch.equal(load(tmp_path / "a.npy"), torch.ones(2, 2))
    assert torch.equal(load(tmp_path / "a.npz", key="q"), torch.ones(3))


@pytest.mark.parametrize("name", ["x-ubyte", "x.idx", "x-ubyte.gz", "x.idx.gz", "anything.gz"])
def test_load_dispatches_idx(tmp_path, name):
    path = write_bytes(
        tmp_path, name, idx_bytes(0x08, (2,), b"\x07\x09"), compress=name.endswith(".gz")
    )
    assert torch.equal(load(path), torch.tensor([7.0, 9.0]))


def test_load_unknown_extension_lists_supported(tmp_path):
    path = write_text(tmp_path, "a.json", "{}")
    with pytest.raises(
        ValueError,
        match=r"unsupported file format: expected one of \.csv, \.tsv, .*\.npz.*got '\.json'",
    ):
        load(path)


def test_load_gzip_that_is_not_idx(tmp_path):
    path = write_bytes(tmp_path, "table.csv.gz", b"a,b\n1,2\n", compress=True)
    with pytest.raises(ValueError, match=r"unsupported file format.*got '\.gz'"):
        load(path)


def test_load_rejects_arguments_meaningless_for_the_format(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(2))
    with pytest.raises(
        ValueError, match=r"columns: expected None for .*a\.npy \(not a text table\), got 'x'"
    ):
        load(tmp_path / "a.npy", columns="x")
    csv_path = write_text(tmp_path, "a.csv", "x\n1\n")
    with pytest.raises(
        ValueError, match=r"key: expected None for .*a\.csv \(not a \.npz archive\), got 'k'"
    ):
        load(csv_path, key="k")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file"):
        load(tmp_path / "missing.csv")


def test_save_writes_what_load_reads_back(tmp_path, capsys):
    rows = torch.tensor([[0.5, -1.25, 3.0], [1e-9, 2.0, 123456.789]])
    save(tmp_path / "rows.csv", rows, ["a", "b", "c"])
    assert (tmp_path / "rows.csv").read_text().splitlines()[0] == "a,b,c"
    assert torch.allclose(load(tmp_path / "rows.csv"), rows)
    assert torch.allclose(load(tmp_path / "rows.csv", columns=["b"]), rows[:, 1:2])
    save(tmp_path / "other.csv", rows, ["too", "few"])  # columns that do not fit: x0, x1, ...
    assert (tmp_path / "other.csv").read_text().splitlines()[0] == "x0,x1,x2"
    images = torch.rand(4, 2, 3)
    save(tmp_path / "images.npy", images)
    assert torch.equal(load(tmp_path / "images.npy"), images)
    save(tmp_path / "flat.csv", images)  # a table of the rows flattened
    assert torch.allclose(load(tmp_path / "flat.csv"), images.reshape(4, 6))
    save(None, rows[:1], ["a", "b", "c"])
    assert capsys.readouterr().out == "a,b,c\n0.5,-1.25,3\n"
    with pytest.raises(ValueError, match=r"path: expected a file ending in .csv or .npy, got '"):
        save(tmp_path / "rows.tsv", rows)
    assert not (tmp_path / "rows.tsv").exists()
    with pytest.raises(ValueError, match="does not exist"):  # the folder must exist
        save(tmp_path / "missing" / "rows.csv", rows)

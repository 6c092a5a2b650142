"""Tests of pyrogen.data.as_tensor: accepted inputs, conversions and every rejection."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrogen.data import as_examples, as_tensor


def test_tensor_is_converted_to_float32_keeping_values():
    data = torch.arange(6, dtype=torch.int64).reshape(3, 2)
    result = as_tensor(data)
    assert result.dtype == torch.float32
    assert torch.equal(result, data.float())


def test_dtype_argument_is_honoured():
    result = as_tensor(np.ones((2, 2), dtype=np.float32), dtype=torch.float64)
    assert result.dtype == torch.float64


@pytest.mark.cuda
def test_tensor_keeps_its_device():
    data = torch.ones(4, 3, device="cuda", dtype=torch.float64)
    result = as_tensor(data)
    assert result.device == data.device
    assert result.dtype == torch.float32


def test_cpu_tensor_stays_on_cpu():
    assert as_tensor(torch.ones(2, 2)).device.type == "cpu"


@pytest.mark.parametrize(
    "dtype", ["f8", "f4", ">f8", ">i4", "<i2", "u1", "u2", "u4", "u8", "i8", "?", "f2"]
)
def test_numpy_numeric_dtypes_and_byte_orders(dtype):
    array = np.array([[0, 1], [1, 0], [1, 1]]).astype(dtype)
    result = as_tensor(array)
    assert result.dtype == torch.float32
    assert torch.equal(result, torch.tensor([[0, 1], [1, 0], [1, 1]], dtype=torch.float32))


def test_read_only_numpy_array_gives_no_warning():
    array = np.frombuffer(np.arange(6, dtype=np.float64).tobytes(), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = as_tensor(array.reshape(3, 2))
    assert result.shape == (3, 2)


def test_non_contiguous_numpy_array():
    array = np.arange(12.0).reshape(3, 4)[:, ::-2]
    assert torch.equal(as_tensor(array), torch.from_numpy(array.copy()).float())


@pytest.mark.parametrize("data", [[[1, 2], [3, 4.5]], ((1, 2), (3, 4.5))])
def test_nested_lists_and_tuples(data):
    assert torch.equal(as_tensor(data), torch.tensor([[1, 2], [3, 4.5]]))


def test_ndim_none_accepts_any_shape():
    assert as_tensor(np.zeros((2, 3, 4)), ndim=None).shape == (2, 3, 4)
    assert as_tensor([1.0, 2.0], ndim=None).shape == (2,)


@pytest.mark.parametrize("data", ["1,2,3", {"a": [1]}, None, 3.0, {1, 2}])
def test_unsupported_types_raise_type_error_naming_argument(data):
    with pytest.raises(
        TypeError, match=r"^x: expected a torch.Tensor, numpy.ndarray or nested list"
    ):
        as_tensor(data, name="x")


@pytest.mark.parametrize(
    ("data", "dtype_text"),
    [
        (np.array([["a", "b"]]), "<U1"),
        (np.array([[1, None]], dtype=object), "object"),
        ([["1", "2"]], "<U1"),
        (np.ones((2, 2), dtype=complex), "complex128"),
    ],
)
def test_non_numeric_arrays_raise(data, dtype_text):
    with pytest.raises(ValueError, match=rf"^x: expected a numeric .*got dtype {dtype_text}"):
        as_tensor(data, name="x")


def test_complex_tensor_raises():
    with pytest.raises(
        ValueError, match=r"expected a real numeric tensor, got dtype torch.complex64"
    ):
        as_tensor(torch.ones(2, 2, dtype=torch.complex64))


def test_ragged_list_raises():
    with pytest.raises(ValueError, match=r"^x: expected a rectangular nested list.*got ragged"):
        as_tensor([[1, 2], [3]], name="x")


def test_one_dimensional_input_suggests_reshape():
    expected = (
        r"^x: expected a 2-D array of shape \(n_samples, n_features\), got shape \(5,\); "
        r"for a single feature pass x\.reshape\(-1, 1\)$"
    )
    with pytest.raises(ValueError, match=expected):
        as_tensor(np.arange(5.0), name="x")


def test_three_dimensional_input_raises():
    with pytest.raises(ValueError, match=r"expected a 2-D array .*got shape \(2, 3, 4\)$"):
        as_tensor(torch.zeros(2, 3, 4))


def test_other_ndim_requirement():
    with pytest.raises(ValueError, match=r"^data: expected a 3-D array, got shape \(2, 2\)$"):
        as_tensor(torch.zeros(2, 2), ndim=3)


def test_negative_ndim_argument_raises():
    with pytest.raises(ValueError, match=r"^ndim: expected None or a non-negative int, got -1"):
        as_tensor(torch.zeros(2, 2), ndim=-1)


def test_zero_rows_raise():
    with pytest.raises(ValueError, match=r"^x: expected at least one row, got shape \(0, 3\)$"):
        as_tensor(np.zeros((0, 3)), name="x")


def test_zero_columns_raise():
    with pytest.raises(ValueError, match=r"expected non-empty data, got shape \(3, 0\)$"):
        as_tensor(torch.zeros(3, 0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("wrap", [np.array, torch.tensor])
def test_non_finite_values_report_first_row_and_column(bad, wrap):
    values = np.zeros((4, 3))
    values[2, 1] = bad
    values[3, 0] = bad
    with pytest.raises(
        ValueError, match=rf"^x: expected finite values, got {bad} at row 2, column 1$"
    ):
        as_tensor(wrap(values), name="x")


def test_non_finite_in_one_dimensional_data_reports_index():
    with pytest.raises(ValueError, match=r"got nan at index 3$"):
        as_tensor([0.0, 1.0, 2.0, float("nan")], ndim=None)


def test_overflow_in_conversion_raises():
    values = np.zeros((2, 2))
    values[1, 0] = 1e300
    with pytest.raises(
        ValueError, match=r"within the range of torch.float32, got 1e\+300 at row 1"
    ):
        as_tensor(values)


def test_overflow_into_integer_dtype_raises():
    with pytest.raises(ValueError, match=r"within the range of torch.int16, got 40000 at row 0"):
        as_tensor(np.array([[40000, 1]]), dtype=torch.int16)


def test_widening_conversion_keeps_integers_exact():
    data = torch.tensor([[2**40, -3]], dtype=torch.int64)
    assert torch.equal(as_tensor(data, dtype=torch.float64), data.double())


def test_as_examples_checks_shape_and_the_unit_interval():
    x = as_examples([[0.0, 1.0]], (2,), dtype=torch.float64, unit_interval="for a test")
    assert x.dtype == torch.float64 and x.shape == (1, 2)
    with pytest.raises(ValueError, match=r"images: expected shape \(n, 1, 2\), got \(1, 2\)"):
        as_examples([[0.0, 1.0]], (1, 2), dtype=torch.float32, name="images")
    with pytest.raises(
        ValueError,
        match=r"x: expected values in \[0, 1\] for a test, got "
        r"values in \[-1, 2\] \(rescale\)",
    ):
        as_examples(
            [[-1.0, 2.0]], (2,), dtype=torch.float32, unit_interval="for a test", hint=" (rescale)"
        )
    assert as_examples([[-1.0, 2.0]], (2,), dtype=torch.float32).shape == (1, 2)


def test_the_checks_live_in_one_module():
    # pyrogen.data hands on the very functions of pyrogen.checks; no second copy exists.
    import pyrogen.checks
    import pyrogen.data

    for name in ("as_examples", "as_labels", "as_tensor", "check_choice", "check_int"):
        assert getattr(pyrogen.data, name) is getattr(pyrogen.checks, name)
    assert not (Path(pyrogen.data.__file__).parent / "validation.py").exists()


@pytest.mark.parametrize(
    ("minimum", "value", "message"),
    [
        (1, 0, "steps: expected a positive integer, got 0"),
        (0, -1, "steps: expected a non-negative integer, got -1"),
        (2, 1, "steps: expected an integer >= 2, got 1"),
        (1, True, "steps: expected a positive integer, got True"),
        (1, 2.0, "steps: expected a positive integer, got 2.0"),
    ],
)
def test_check_int_has_one_wording(minimum, value, message):
    from pyrogen.checks import check_int

    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int("steps", value, minimum)


def test_check_int_takes_numpy_integers_and_returns_an_int():
    from pyrogen.checks import check_int

    value = check_int("steps", np.int64(3))
    assert value == 3 and type(value) is int


def test_check_ints_names_the_argument():
    from pyrogen.checks import check_ints

    assert check_ints("hidden", [8, np.int32(4)]) == (8, 4)
    with pytest.raises(ValueError, match=r"^hidden: expected a sequence of positive integers"):
        check_ints("hidden", [8, 0])
    with pytest.raises(ValueError, match=r"^hidden: expected a non-empty sequence"):
        check_ints("hidden", [], allow_empty=False)

"""The argument checks under their former address; they live in :mod:`pyrogen.checks`.

Kept so that ``from pyrogen.data.validation import check_int`` (and the other names) keeps
working; new code imports from :mod:`pyrogen.checks`.
"""

from __future__ import annotations

from pyrogen.checks import (
    as_examples,
    as_labels,
    as_tensor,
    check_choice,
    check_int,
    float_dtype_of,
)

__all__ = [
    "as_examples",
    "as_labels",
    "as_tensor",
    "check_choice",
    "check_int",
    "float_dtype_of",
]

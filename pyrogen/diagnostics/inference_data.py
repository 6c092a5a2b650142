"""ArviZ ``InferenceData`` from any pyrogen posterior, under its diagnostics address.

The converter lives in the inference layer (:mod:`pyrogen.infer.inference_data`), so that
MCMC workflows there can return ``InferenceData`` without importing upwards; it is
re-exported here and as ``pyrogen.diagnostics.to_inference_data``.

Example:
    >>> import pyrogen
    >>> from pyrogen.diagnostics.inference_data import to_inference_data
    >>> x = pyrogen.data.old_faithful()
    >>> gmm = pyrogen.GaussianMixture(2, inference="variational")
    >>> result = pyrogen.fit(gmm, x, steps=5, progress=False)
    >>> to_inference_data(result, x, num_samples=10).posterior["locs"].dims
    ('chain', 'draw', 'component', 'locs_dim_1')
"""

from __future__ import annotations

from pyrogen.infer.inference_data import FEATURE_DIM, ROW_DIM, to_inference_data

__all__ = ["FEATURE_DIM", "ROW_DIM", "to_inference_data"]

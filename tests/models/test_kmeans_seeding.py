"""k-means++ seeding: one centre per well-separated cluster, at any number of rows."""

from __future__ import annotations

import pytest
import torch

from pyrogen.models import mixture_em
from pyrogen.models.mixture_em import kmeans_plusplus


@pytest.mark.parametrize("beyond_multinomial", [False, True])
def test_seeds_land_in_distinct_far_clusters(beyond_multinomial, monkeypatch):
    if beyond_multinomial:  # the inverse-CDF draw used past torch.multinomial's 2^24 rows
        monkeypatch.setattr(mixture_em, "_MULTINOMIAL_CATEGORIES", 10)
    generator = torch.Generator().manual_seed(0)
    offsets = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    x = (offsets.repeat_interleave(250, 0) + torch.randn(1000, 2, generator=generator)).double()
    for seed in range(10):
        centres = kmeans_plusplus(x, 4, torch.Generator().manual_seed(seed))
        # A centre in the same cluster as another would leave one cluster without any: the
        # distance-squared weighting makes that chance about 1e-4 per pick here.
        nearest = torch.cdist(centres, offsets.double()).argmin(-1)
        assert sorted(nearest.tolist()) == [0, 1, 2, 3]

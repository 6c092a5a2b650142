"""Noise schedules of variance-preserving diffusion, as log signal-to-noise ratios.

A schedule is gamma_t = log(sigma_t^2 / alpha_t^2) at the T + 1 noise levels t = 0..T,
increasing in t, with alpha_t^2 = sigmoid(-gamma_t) and sigma_t^2 = sigmoid(gamma_t) (so
alpha^2 + sigma^2 = 1), as in Kingma et al. (2021), "Variational Diffusion Models". Level 0 is
the nearly noiseless latent the data are observed through; level T is nearly pure noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pyrogen.checks import check_int

#: Schedules known by name.
SCHEDULES = ("linear", "cosine", "learned")
#: gamma at level 0 (sigma_0 ~ 1.3e-3, well inside one of 256 levels of [-1, 1]) and, for the
#: learned schedule, the initial gamma at level T: VDM's values.
GAMMA_MIN, GAMMA_MAX = -13.3, 5.0


class NoiseSchedule(nn.Module):
    """gamma_0 < gamma_1 < ... < gamma_T for T diffusion steps.

    Args:
        kind: ``"linear"`` (VDM's fixed schedule: gamma linear in t from -13.3 to 5, so
            every step changes the log-SNR by the same amount), ``"cosine"`` (Nichol &
            Dhariwal's cosine schedule for levels 1..T, with level 0 at gamma = -13.3 below
            it: its first step is a large one, and dominates the ELBO) or ``"learned"``
            (VDM: gamma_0 and gamma_T are parameters and the levels between them a learned
            monotone path, starting as ``"linear"``). DDPM's linear-in-beta schedule is
            not offered: with a nearly noiseless level 0 it has the same large first step.
        timesteps: T, the number of diffusion steps (>= 1).

    Shapes:
        ``schedule()`` returns gamma of shape (T + 1,).

    Example:
        >>> NoiseSchedule("cosine", 10)().shape
        torch.Size([11])
    """

    def __init__(self, kind: str = "cosine", timesteps: int = 1000) -> None:
        super().__init__()
        if kind not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {kind!r}")
        self.kind = kind
        self.timesteps = check_int("timesteps", timesteps)
        if kind == "learned":
            self.gamma_0 = nn.Parameter(torch.tensor(GAMMA_MIN))
            self.gamma_T = nn.Parameter(torch.tensor(GAMMA_MAX))
            # Equal softplus'd increments: gamma linear in t at the start.
            self.increments = nn.Parameter(torch.zeros(self.timesteps))
        else:
            self.register_buffer("fixed", _fixed_gamma(kind, self.timesteps))

    def forward(self) -> torch.Tensor:
        """gamma_t for t = 0..T, shape (T + 1,)."""
        if self.kind != "learned":
            return self.fixed
        steps = F.softplus(self.increments)
        path = torch.cat([steps.new_zeros(1), steps.cumsum(0) / steps.sum()])
        return self.gamma_0 + (self.gamma_T - self.gamma_0) * path


def _fixed_gamma(kind: str, timesteps: int) -> torch.Tensor:
    """gamma of a named schedule at levels 0..T (float32)."""
    if kind == "linear":
        return torch.linspace(GAMMA_MIN, GAMMA_MAX, timesteps + 1)
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)
    offset = 0.008
    f = torch.cos(
        (torch.cat([t.new_zeros(1), t]) / timesteps + offset) / (1 + offset) * math.pi / 2
    )
    alpha_bar = f**2 / f[0] ** 2
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    log_alpha_bar = torch.log1p(-betas.clamp(max=0.999)).cumsum(0)
    gamma = torch.log(-torch.expm1(log_alpha_bar)) - log_alpha_bar  # log((1 - abar) / abar)
    # Level 0 observes the data; it must be less noisy than level 1.
    gamma_0 = min(GAMMA_MIN, float(gamma[0]) - 1.0)
    return torch.cat([gamma.new_tensor([gamma_0]), gamma]).float()

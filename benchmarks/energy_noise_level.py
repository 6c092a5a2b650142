"""Denoising score matching's noise level: what a smaller, annealed, mixed or noise-conditional
level does to ``pyrogen.EnergyDensity``'s held-out nats and to the masses of separated modes.

The sets are ``benchmarks/energy_density.py``'s ring of 8 and 5 x 5 grid of Gaussians (sd
``--ring-sd``, the same seeded halves) and its spiral. Each variant trains the default network
(``--hidden``) for ``--steps`` steps of ``pyrogen.fit`` (batch 256, Adam 1e-3) and is scored by
``log_prob`` (exact: log Z by quadrature). Variants:

* ``sigma S``: ``noise_levels=(S,)``, one level throughout (0.1 is the default);
* ``anneal 1 -> S``: the level falls geometrically from 1 to S over the first half of the
  steps and stays at S (a callback sets the objective's level before each step);
* ``levels 0.1 x3, 0.3``: ``noise_levels=(0.1, 0.1, 0.1, 0.3)``, one energy for all levels;
* ``all rows, sigma 0.1``: every row at every step (no minibatch noise);
* ``conditional [a, b]``: a hand-written torch twin, E(u, log sigma) by the same MLP with
  log sigma as one more input, sigma log-uniform in [a, b] per row, scored at sigma = a.

For the ring and the grid, the mode masses: the model's probability (by quadrature on a
400 x 400 grid over the data's box plus 1 sd) nearest each centre, as its smallest and largest
share (each 1/K in the data).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import pyrogen
from benchmarks import harness
from benchmarks.energy_density import spiral, split
from pyrogen.diagnostics.sample_tests import grid_of_gaussians, ring_of_gaussians
from pyrogen.infer.callbacks import Callback

VARIANTS = (
    "sigma 0.1,sigma 0.05,sigma 0.03,anneal 1 -> 0.1,anneal 1 -> 0.05,levels 0.1 x3 0.3,"
    "all rows sigma 0.1,conditional [0.1 1],conditional [0.03 1]"
)


class AnnealedLevel(Callback):
    """Sets DSM's one noise level before each step: 1 falling geometrically to ``final`` over
    the first half of ``steps``, then ``final``."""

    def __init__(self, final: float, steps: int) -> None:
        self.final, self.half = final, max(steps // 2, 2)

    def level(self, step: int) -> float:
        return self.final ** min(step / (self.half - 1), 1.0)

    def on_fit_start(self, loop) -> None:
        loop.elbo.noise_levels.fill_(self.level(0))  # the objective the loop differentiates

    def on_step_end(self, loop, loss: float) -> None:
        loop.elbo.noise_levels.fill_(self.level(loop.state.step))


def fit_variant(variant: str, train: torch.Tensor, args):
    """The fitted model's log-density in data units: a function of rows (N, 2) -> (N,)."""
    torch.manual_seed(args.seed)
    options = {"steps": args.steps, "seed": args.seed, "progress": False}
    kind, _, rest = variant.partition(" ")
    if kind == "conditional":
        low, high = (float(v) for v in rest.strip("[]").split())
        return fit_conditional(train, low, high, args)
    if kind == "anneal":
        final = float(rest.split("->")[1])
        model = pyrogen.EnergyDensity(2, hidden=args.hidden, noise_levels=(1.0,))
        options["callbacks"] = [AnnealedLevel(final, args.steps)]
    elif kind == "levels":
        model = pyrogen.EnergyDensity(2, hidden=args.hidden, noise_levels=(0.1, 0.1, 0.1, 0.3))
    elif kind == "all":
        model = pyrogen.EnergyDensity(2, hidden=args.hidden, noise_levels=(0.1,))
        options["batch_size"] = len(train)
    else:
        model = pyrogen.EnergyDensity(2, hidden=args.hidden, noise_levels=(float(rest),))
    pyrogen.fit(model, train, **options)
    return model.log_prob


def fit_conditional(train: torch.Tensor, low: float, high: float, args):
    """E(u, log sigma) trained by DSM with sigma log-uniform in [low, high] (antithetic pairs,
    Song & Ermon's weighting, as EnergyDensity's objective); log p at sigma = low by
    quadrature on [-10, 10]^2 standardized (512 nodes per side)."""
    shift, scale = train.mean(0), train.std(0)
    rows = (train - shift) / scale
    widths = (3, *args.hidden)
    pairs = zip(widths[:-1], widths[1:], strict=True)
    layers = [m for a, b in pairs for m in (nn.Linear(a, b), nn.SiLU())]
    net = nn.Sequential(*layers, nn.Linear(widths[-1], 1, bias=False))

    def energy(u: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([u, log_sigma.expand(*u.shape[:-1], 1)], -1)
        return net(inputs).squeeze(-1) + (u**2).sum(-1) / (2 * 3.0**2)

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    span = math.log(high / low)
    for _ in range(args.steps):
        u = rows[torch.randint(len(rows), (256,))]
        log_sigma = math.log(low) + span * torch.rand(len(u), 1)
        eps = torch.randn_like(u)
        u, log_sigma, eps = torch.cat([u, u]), torch.cat([log_sigma] * 2), torch.cat([eps, -eps])
        noisy = (u + log_sigma.exp() * eps).requires_grad_(True)
        (score,) = torch.autograd.grad(-energy(noisy, log_sigma).sum(), noisy, create_graph=True)
        loss = 0.5 * ((log_sigma.exp() * score + eps) ** 2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        nodes = -10 + 20 / 512 * (torch.arange(512) + 0.5)
        grid = torch.cartesian_prod(nodes, nodes)
        level = torch.tensor([[math.log(low)]])
        log_z = torch.logsumexp(-energy(grid, level), 0) + 2 * math.log(20 / 512)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return -energy((x - shift) / scale, level) - log_z - scale.log().sum()

    return log_prob


def mode_masses(log_prob, train: torch.Tensor, centres: torch.Tensor) -> tuple[float, float]:
    """The smallest and largest probability nearest one centre (quadrature, 400^2 nodes)."""
    low, high = train.min(0).values - train.std(0), train.max(0).values + train.std(0)
    axes = [torch.linspace(a, b, 400) for a, b in zip(low.tolist(), high.tolist(), strict=True)]
    points = torch.cartesian_prod(*axes)
    cell = math.prod(float(a[1] - a[0]) for a in axes)
    mass = log_prob(points).exp() * cell
    nearest = torch.cdist(points, centres).argmin(1)
    shares = torch.zeros(len(centres)).index_add_(0, nearest, mass)
    return shares.min().item(), shares.max().item()


COLUMNS = [
    ("data", "data"),
    ("variant", "variant"),
    ("test_ll", "held-out (nats/row)", ".3f"),
    ("smallest", "smallest mode mass", ".3f"),
    ("largest", "largest mode mass", ".3f"),
    ("equal", "each mode's in the data", ".3f"),
]


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--sets", default="ring of 8,5x5 grid,spiral")
    options.add_argument("--variants", default=None, help="comma-separated (see the docstring)")
    options.add_argument("--rows", type=int, default=None, help="rows of each set (1000)")
    options.add_argument("--ring-sd", type=float, default=0.2, help="of each Gaussian")
    options.add_argument("--steps", type=int, default=None, help="(2000)")
    options.add_argument("--hidden", default=None, help="widths (128,128)")
    run = harness.start(
        "energy_noise_level",
        options,
        argv,
        full={"rows": 1000, "steps": 2000, "hidden": "128,128", "variants": VARIANTS},
        quick={"rows": 100, "steps": 4, "hidden": "8", "variants": VARIANTS},
    )
    args = run.args
    args.hidden = tuple(int(h) for h in args.hidden.split(","))
    n, sd = 2 * args.rows, args.ring_sd
    ring, ring_centres, _ = ring_of_gaussians(n, radius=2.0, sd=sd, seed=args.seed)
    grid, grid_centres, _ = grid_of_gaussians(n, side=5, spacing=2.0, sd=sd, seed=args.seed)
    sets = {
        "ring of 8": (ring, ring_centres),
        "5x5 grid": (grid, grid_centres),
        "spiral": (spiral(n, args.seed), None),
    }
    rows = []
    for name in args.sets.split(","):
        x, centres = sets[name]
        train, test = split(x, 0.5, args.seed)
        for variant in args.variants.split(","):
            log_prob = fit_variant(variant, train, args)
            row = {"data": name, "variant": variant, "test_ll": log_prob(test).mean().item()}
            if centres is not None:
                row["smallest"], row["largest"] = mode_masses(log_prob, train, centres)
                row["equal"] = 1 / len(centres)
            rows.append(row)
    run.write(
        "EnergyDensity: denoising score matching's noise level",
        [harness.Table(rows, COLUMNS, "Held-out nats per row and mode masses, by variant")],
        notes=[
            "One seed per variant; higher held-out nats are better. A mode's mass is the "
            "model's probability nearest its centre (1/K in the data)."
        ],
        data={"finite": all(math.isfinite(r["test_ll"]) for r in rows)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

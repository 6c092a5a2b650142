"""Posterior accuracy of ``pyrogen.AutoFlow`` against Pyro's own autoguides, in one run.

Every guide is trained with the same optimizer, steps, learning-rate decay and particles
(``ClippedAdam`` with a 100-fold decay, ``Trace_ELBO(num_particles, vectorize_particles)``)
on three models whose posterior is known:

* **conjugate**: mu ~ N(0, I_5), x_i ~ N(mu, Sigma) for 10 rows with a fixed correlated
  Sigma; the posterior is Gaussian with precision I + n Sigma^-1 (exact mean, sd, log Z).
* **funnel**: Neal's funnel in 10 dims, y ~ N(0, 3), x_i | y ~ N(0, exp(y / 2)), i = 1..9,
  without data, so the posterior is the prior: mean 0, sd(y) = 3, sd(x_i) = exp(9 / 4),
  log Z = 0.
* **eight schools** (centered): mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_j ~ N(mu, tau),
  y_j ~ N(theta_j, sigma_j). The reference is exact up to 1-D quadrature: given tau, mu and
  theta are Gaussian, and p(tau | y) is evaluated on a grid of log tau. A NUTS run
  (``pyro.infer.MCMC``, on the non-centered form, which has the same posterior without the
  centered form's divergences) is reported next to it as a cross-check, with r-hat.
* **hierarchical logistic regression** (``--models hier_logistic``, written to
  ``results/flows_posterior_hier_logistic.*``): tau ~ HalfCauchy(1), w ~ N(0, tau I_3),
  b ~ N(0, 5), y_i ~ Bernoulli(sigmoid(x_i w + b)) for 150 rows drawn from the model
  (w ~ N(0, 1), b = 0.5); 5 latent values, tau with a heavy right tail. The reference is
  NUTS (``--chains`` x ``--nuts-draws``); the rows are AutoNormal and AutoIAFNormal
  (trained as above), ``AutoFlow`` with its own defaults (``guide.fit(x, y)``), NeuTra
  (``pyrogen.neutra`` from that AutoFlow) and a second, independent plain NUTS run of
  NeuTra's length, with ESS and divergences for the samplers.

* **funnel, NeuTra vs plain NUTS** (``--models funnel_neutra``, written to
  ``results/flows_posterior_funnel_neutra.*``): Neal's funnel in 10 dims as above, sampled
  by plain NUTS (JIT-compiled, tree depth up to 10) and by ``pyrogen.neutra`` from
  ``AutoFlow(model).fit()`` with its defaults, both ``--chains`` x (``--warmup`` +
  ``--neutra-draws``) per seed. Per seed: divergences, min ESS over the 10 values
  (``arviz.ess``), ESS of y, the error of mean(y) and sd(y) against the truth (0, 3), the
  lowest y reached (the neck: 1% of the prior lies below y = -7), the share of draws with
  y < -3 (truth 0.159), and fit and sampling wall times.

Per model and guide: the largest absolute error of the posterior means and of the posterior
sds over all latent values, in units of the reference sd (from ``--draws`` guide draws, in
the constrained space), PSIS k-hat (``pyrogen.guides.psis_khat``), the final ELBO from
``--elbo-particles`` particles with the gap to log Z where known, and training wall time.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO, autoguide
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

import pyrogen
from benchmarks import harness
from pyrogen.guides import psis_khat

GUIDES = "AutoFlow(nsf),AutoFlow(iaf),AutoNormal,AutoMultivariateNormal,AutoIAFNormal"

# Eight schools (Rubin 1981).
SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


# --- models and exact references ----------------------------------------------------------


def conjugate_problem(seed: int):
    gen = torch.Generator().manual_seed(seed)
    d, n = 5, 10
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    corr = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
    sd = torch.linspace(1.0, 3.0, d, dtype=torch.float64)
    corr = corr / torch.outer(corr.diag().sqrt(), corr.diag().sqrt())
    cov = corr * torch.outer(sd, sd)
    true_mu = torch.randn(d, generator=gen, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    x = true_mu + torch.randn(n, d, generator=gen, dtype=torch.float64) @ chol.T
    cov32, x32 = cov.float(), x.float()

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("obs", dist.MultivariateNormal(mu, covariance_matrix=cov32), obs=x)

    cov_inv = torch.linalg.inv(cov)
    post_cov = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + n * cov_inv)
    post_mean = post_cov @ (cov_inv @ x.sum(0))
    # log Z: the rows are jointly Gaussian with mean 0 and covariance I_n (x) Sigma + 11^T (x) I.
    big = torch.kron(torch.eye(n, dtype=torch.float64), cov) + torch.kron(
        torch.ones(n, n, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    )
    log_z = torch.distributions.MultivariateNormal(
        torch.zeros(n * d, dtype=torch.float64), covariance_matrix=big
    ).log_prob(x.reshape(-1))
    reference = {
        "mean": {"mu": post_mean.tolist()},
        "sd": {"mu": post_cov.diag().sqrt().tolist()},
        "log_z": float(log_z),
        "method": "closed form",
    }
    return model, (x32,), reference


def funnel_problem(seed: int):
    k = 9

    def model():
        y = pyro.sample("y", dist.Normal(0.0, 3.0))
        pyro.sample("x", dist.Normal(torch.zeros(k), (y / 2).exp().unsqueeze(-1)).to_event(1))

    reference = {
        "mean": {"y": [0.0], "x": [0.0] * k},
        # Var x_i = E[exp(y)] = exp(9 / 2) for y ~ N(0, 9).
        "sd": {"y": [3.0], "x": [math.exp(9 / 4)] * k},
        "log_z": 0.0,
        "method": "closed form (no data: the posterior is the prior)",
    }
    return model, (), reference


def schools_model(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def schools_noncentered(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def schools_quadrature(grid: int = 200_001):
    """Exact posterior moments and log Z of the eight-schools model by quadrature over tau."""

    y, s2 = np.array(SCHOOLS_Y), np.array(SCHOOLS_SIGMA) ** 2
    prior_var = 25.0
    log_tau = np.linspace(-16.0, 16.0, grid)
    tau = np.exp(log_tau)
    v = s2[None, :] + tau[:, None] ** 2  # y_j | mu, tau ~ N(mu, v_j)
    # mu integrated out: y | tau ~ N(0, diag(v) + 25 11^T) (matrix determinant lemma and
    # Sherman-Morrison for the rank-one term).
    precision = 1 / prior_var + (1 / v).sum(1)  # of mu | tau, y
    m = (y / v).sum(1) / precision
    log_det = np.log(v).sum(1) + np.log(1 + prior_var * (1 / v).sum(1))
    quad = (y**2 / v).sum(1) - (y / v).sum(1) ** 2 / precision
    log_lik = -0.5 * (len(y) * math.log(2 * math.pi) + log_det + quad)
    log_prior = math.log(2 / (math.pi * 5.0)) - np.log1p((tau / 5.0) ** 2)
    log_w = log_lik + log_prior + log_tau  # density in log tau
    step = log_tau[1] - log_tau[0]
    top = log_w.max()
    weights = np.exp(log_w - top)
    total = weights.sum()
    log_z = top + math.log(total * step)
    weights = weights / total

    def moments(mean_given, var_given):
        mean = (weights[:, None] * mean_given).sum(0)
        var = (weights[:, None] * (var_given + mean_given**2)).sum(0) - mean**2
        return mean, np.sqrt(var)

    mu_mean, mu_sd = moments(m[:, None], (1 / precision)[:, None])
    tau_mean, tau_sd = moments(tau[:, None], np.zeros((grid, 1)))
    prec_theta = 1 / s2[None, :] + 1 / tau[:, None] ** 2
    b = (1 / tau[:, None] ** 2) / prec_theta
    a = (1 / s2[None, :]) / prec_theta
    theta_mean, theta_sd = moments(
        a * y + b * m[:, None], 1 / prec_theta + b**2 / precision[:, None]
    )
    return {
        "mean": {"mu": mu_mean.tolist(), "tau": tau_mean.tolist(), "theta": theta_mean.tolist()},
        "sd": {"mu": mu_sd.tolist(), "tau": tau_sd.tolist(), "theta": theta_sd.tolist()},
        "log_z": float(log_z),
        "method": f"quadrature over log tau ({grid} points in [-16, 16])",
    }


def schools_nuts(chains: int, draws: int, seed: int):
    """NUTS on the non-centered model: chains run one after another; split r-hat."""

    y, sigma = torch.tensor(SCHOOLS_Y), torch.tensor(SCHOOLS_SIGMA)
    samples: dict[str, list] = {"mu": [], "tau": [], "theta": []}
    divergences = 0
    started = time.perf_counter()
    for chain in range(chains):
        pyro.set_rng_seed(seed + 1000 + chain)
        kernel = NUTS(schools_noncentered, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(
            kernel, num_samples=draws, warmup_steps=max(draws // 2, 100), disable_progbar=True
        )
        mcmc.run(y, sigma)
        got = mcmc.get_samples()
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
        samples["mu"].append(got["mu"].reshape(draws, 1))
        samples["tau"].append(got["tau"].reshape(draws, 1))
        eta = got["eta"].reshape(draws, -1)
        samples["theta"].append(got["mu"].reshape(draws, 1) + got["tau"].reshape(draws, 1) * eta)
    stacked = {k: torch.stack(v) for k, v in samples.items()}  # (chains, draws, dim)
    return {
        "mean": {k: v.reshape(-1, v.shape[-1]).mean(0).tolist() for k, v in stacked.items()},
        "sd": {k: v.reshape(-1, v.shape[-1]).std(0).tolist() for k, v in stacked.items()},
        "max_rhat": max(float(split_gelman_rubin(v).max()) for v in stacked.values()),
        "min_ess": min(float(effective_sample_size(v).min()) for v in stacked.values()),
        "divergences": divergences,
        "chains": chains,
        "draws_per_chain": draws,
        "time_s": time.perf_counter() - started,
    }


def schools_problem(seed: int):
    return (
        schools_model,
        (torch.tensor(SCHOOLS_Y), torch.tensor(SCHOOLS_SIGMA)),
        schools_quadrature(),
    )


# --- guides and metrics ---------------------------------------------------------------------


def make_guide(name: str, model):
    if name == "AutoFlow(nsf)":
        return pyrogen.AutoFlow(model, flow="nsf")
    if name == "AutoFlow(iaf)":
        return pyrogen.AutoFlow(model, flow="iaf")
    if name == "AutoNormal":
        return autoguide.AutoNormal(model)
    if name == "AutoMultivariateNormal":
        return autoguide.AutoMultivariateNormal(model)
    if name == "AutoIAFNormal":
        return autoguide.AutoIAFNormal(model, hidden_dim=[64, 64], num_transforms=3)
    raise ValueError(name)


def guide_draws(guide, n: int, sites) -> dict:
    """n draws of each latent site from a trained guide, constrained, flattened to (n, -1).

    Drawn the same way for every guide (Pyro's ``AutoNormal`` has no joint posterior):
    from the guide's distribution of the unconstrained values, unpacked site by site.
    """

    draws = {}
    with torch.no_grad():
        if hasattr(guide, "locs"):  # AutoNormal: independent normals per site
            for name, site in guide.prototype_trace.iter_stochastic_nodes():
                loc, scale = guide._get_loc_and_scale(name)
                u = loc + scale * torch.randn(n, *loc.shape)
                draws[name] = biject_to(site["fn"].support)(u)
        else:  # AutoContinuous: one vector of all unconstrained values
            posterior = guide.get_posterior()
            latent = getattr(posterior, "dist", posterior).rsample((n,))  # ZukoToPyro.dist
            pos = 0
            for name, site in guide.prototype_trace.iter_stochastic_nodes():
                shape = guide._unconstrained_shapes[name]
                size = math.prod(shape)
                u = latent[:, pos : pos + size].reshape(n, *shape)
                draws[name] = biject_to(site["fn"].support)(u)
                pos += size
            assert pos == latent.shape[-1]
    return {k: draws[k].reshape(n, -1).double() for k in sites}


def errors(means: dict, sds: dict, reference: dict) -> dict:
    """Largest mean error (in reference sds) and sd error (relative) over all values."""

    mean_err, sd_err, worst = 0.0, 0.0, {}
    for site, ref_mean in reference["mean"].items():
        ref_mean = torch.tensor(ref_mean, dtype=torch.float64)
        ref_sd = torch.tensor(reference["sd"][site], dtype=torch.float64)
        mean = torch.as_tensor(means[site], dtype=torch.float64)
        sd = torch.as_tensor(sds[site], dtype=torch.float64)
        m = ((mean - ref_mean).abs() / ref_sd).max().item()
        s = ((sd - ref_sd).abs() / ref_sd).max().item()
        worst[site] = {"mean_err": m, "sd_err": s}
        mean_err, sd_err = max(mean_err, m), max(sd_err, s)
    return {"mean_err": mean_err, "sd_err": sd_err, "per_site": worst}


def run_one(model_name, model, model_args, reference, guide_name, args, seed: int) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(guide_name, model)
    optim = pyro.optim.ClippedAdam({"lr": args.lr, "lrd": 0.01 ** (1 / args.steps)})
    elbo = Trace_ELBO(num_particles=args.particles, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, optim, elbo)
    losses = []
    started = time.perf_counter()
    for _ in range(args.steps):
        losses.append(svi.step(*model_args))
    train_s = time.perf_counter() - started
    pyro.set_rng_seed(seed + 1)
    draws = guide_draws(guide, args.draws, reference["mean"].keys())
    row = {"model": model_name, "guide": guide_name, "seed": seed, "train_s": train_s}
    row |= errors(
        {k: v.mean(0) for k, v in draws.items()}, {k: v.std(0) for k, v in draws.items()}, reference
    )
    with torch.no_grad():
        final = Trace_ELBO(
            num_particles=args.elbo_particles, vectorize_particles=True, max_plate_nesting=1
        )
        row["elbo"] = -final.loss(model, guide, *model_args)
        row["khat"] = psis_khat(model, guide, *model_args, num_samples=args.khat_samples)
    row["elbo_gap"] = (
        reference["log_z"] - row["elbo"] if reference.get("log_z") is not None else None
    )
    row["err"] = max(row["mean_err"], row["sd_err"])
    row["final_loss_mean_last_50"] = sum(losses[-50:]) / len(losses[-50:])
    row["finite"] = all(math.isfinite(v) for v in losses)
    return row


COLUMNS = [
    ("model", "model"),
    ("guide", "guide"),
    ("err", "error", ".3f"),
    ("worst_err", "worst seed", ".3f"),
    ("mean_err", "max mean err (sd)", ".3f"),
    ("sd_err", "max sd err (rel.)", ".3f"),
    ("khat", "k-hat", ".2f"),
    ("elbo", "ELBO", ".2f"),
    ("elbo_gap", "log Z - ELBO", ".3f"),
    ("train_s", "train s", ".1f"),
]


def hier_logistic_data(seed: int = 0, n: int = 150, d: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    w = torch.randn(d, generator=gen)
    y = torch.bernoulli(torch.sigmoid(x @ w + 0.5), generator=gen)
    return x, y


def hier_logistic(x, y=None):
    tau = pyro.sample("tau", dist.HalfCauchy(1.0))
    # tau[..., None]: a batch of draws of tau (vectorized particles) broadcasts correctly.
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), tau.unsqueeze(-1)).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("rows", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=(x * w).sum(-1) + b), obs=y)


HL_SITES = ("tau", "w", "b")


def _draw_stats(draws: dict) -> tuple[dict, dict]:
    """Means and sds of flattened draws, site -> (n, k) or (chains, draws, k)."""
    means, sds = {}, {}
    for site, value in draws.items():
        flat = value.reshape(-1, value.shape[-1])
        means[site], sds[site] = flat.mean(0).tolist(), flat.std(0).tolist()
    return means, sds


def _nuts_hl(x, y, chains: int, draws: int, seed: int) -> dict:
    """Plain NUTS on the hierarchical logistic model: draws (chains, draws, k), ESS, time."""

    out: dict[str, list] = {k: [] for k in HL_SITES}
    divergences = 0
    started = time.perf_counter()
    for chain in range(chains):
        pyro.set_rng_seed(seed + chain)
        kernel = NUTS(hier_logistic, jit_compile=True, ignore_jit_warnings=True)
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=draws, disable_progbar=True)
        mcmc.run(x, y)
        got = mcmc.get_samples()
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
        for k in HL_SITES:
            out[k].append(got[k].reshape(draws, -1).double())
    stacked = {k: torch.stack(v) for k, v in out.items()}
    return {
        "draws": stacked,
        "time_s": time.perf_counter() - started,
        "min_ess": min(float(effective_sample_size(v).min()) for v in stacked.values()),
        "divergences": divergences,
    }


def hier_logistic_section(args, seeds) -> tuple[list, dict]:
    """Rows for the hierarchical logistic regression (see the module docstring)."""

    x, y = hier_logistic_data()
    ref_run = _nuts_hl(x, y, args.chains, args.nuts_draws, seed=1000)
    means, sds = _draw_stats(ref_run["draws"])
    reference = {"mean": means, "sd": sds, "log_z": None}
    reference["method"] = f"NUTS, {args.chains} chains x {args.nuts_draws} draws"
    reference["min_ess"], reference["time_s"] = ref_run["min_ess"], ref_run["time_s"]
    rows: list[dict] = [
        {
            "model": "hier_logistic",
            "guide": "NUTS (reference)",
            "train_s": ref_run["time_s"],
            "ess": ref_run["min_ess"],
            "divergences": ref_run["divergences"],
        }
    ]
    model_args = (x, y)
    for name in ("AutoNormal", "AutoIAFNormal"):
        mine = [
            run_one("hier_logistic", hier_logistic, model_args, reference, name, args, seed)
            for seed in seeds
        ]
        row = {"model": "hier_logistic", "guide": name}
        for key in ("err", "mean_err", "sd_err", "khat", "elbo", "train_s"):
            row[key] = statistics.median(run[key] for run in mine)
        row["worst_err"] = max(run["err"] for run in mine)
        rows.append(row)
        print(f"hier_logistic {name:24s} error {row['err']:.3f} ({row['train_s']:.1f} s)")
    flows, neutras, nuts_runs = [], [], []
    chains, draws = min(2, args.chains), max(args.nuts_draws // 2, 10)
    for seed in seeds:
        pyro.clear_param_store()
        guide = pyrogen.AutoFlow(hier_logistic)
        started = time.perf_counter()
        steps = args.steps if args.quick else None
        guide.fit(x, y, steps=steps, seed=seed)
        fit_s = time.perf_counter() - started
        pyro.set_rng_seed(seed + 1)
        got = guide.sample_posterior(args.draws)
        m, s = _draw_stats({k: got[k].reshape(args.draws, -1).double() for k in HL_SITES})
        run = {"seed": seed, "train_s": fit_s} | errors(m, s, reference)
        run["err"] = max(run["mean_err"], run["sd_err"])
        with torch.no_grad():
            final = pyro.infer.Trace_ELBO(
                num_particles=args.elbo_particles, vectorize_particles=True, max_plate_nesting=1
            )
            run["elbo"] = -final.loss(hier_logistic, guide, x, y)
        run["khat"] = pyrogen.guides.psis_khat(
            hier_logistic, guide, x, y, num_samples=args.khat_samples
        )
        flows.append(run)
        started = time.perf_counter()
        idata = pyrogen.neutra(
            hier_logistic,
            guide,
            x,
            y,
            num_samples=draws,
            warmup=draws,
            num_chains=chains,
            seed=seed,
        )
        neutra_s = time.perf_counter() - started
        post = {
            k: torch.as_tensor(idata.posterior[k].values).reshape(chains, draws, -1).double()
            for k in HL_SITES
        }
        m, s = _draw_stats(post)
        nt = {"seed": seed, "train_s": neutra_s} | errors(m, s, reference)
        nt["err"] = max(nt["mean_err"], nt["sd_err"])
        nt["ess"] = min(float(effective_sample_size(v).min()) for v in post.values())
        nt["divergences"] = int(idata.sample_stats["diverging"].values.sum())
        neutras.append(nt)
        plain = _nuts_hl(x, y, chains, draws, seed=seed)
        m, s = _draw_stats(plain["draws"])
        pn = {"seed": seed, "train_s": plain["time_s"]} | errors(m, s, reference)
        pn["err"] = max(pn["mean_err"], pn["sd_err"])
        pn["ess"], pn["divergences"] = plain["min_ess"], plain["divergences"]
        nuts_runs.append(pn)
        print(
            f"hier_logistic seed {seed}: AutoFlow {run['err']:.3f} ({fit_s:.1f} s), "
            f"NeuTra {nt['err']:.3f} ESS {nt['ess']:.0f} ({neutra_s:.1f} s), "
            f"NUTS {pn['err']:.3f} ESS {pn['ess']:.0f} ({plain['time_s']:.1f} s)",
            flush=True,
        )
    for label, mine in (
        ("AutoFlow (defaults)", flows),
        (f"NeuTra ({chains} x {draws})", neutras),
        (f"NUTS ({chains} x {draws})", nuts_runs),
    ):
        row = {"model": "hier_logistic", "guide": label}
        for key in ("err", "mean_err", "sd_err", "khat", "elbo", "train_s", "ess", "divergences"):
            if key in mine[0]:
                row[key] = statistics.median(run[key] for run in mine)
        row["worst_err"] = max(run["err"] for run in mine)
        rows.append(row)
    runs = {"autoflow": flows, "neutra": neutras, "nuts": nuts_runs}
    return rows, {"reference": reference, "runs": runs}


HL_COLUMNS = [
    ("guide", "method"),
    ("err", "error", ".3f"),
    ("worst_err", "worst seed", ".3f"),
    ("mean_err", "max mean err (sd)", ".3f"),
    ("sd_err", "max sd err (rel.)", ".3f"),
    ("khat", "k-hat", ".2f"),
    ("ess", "min ESS", ".0f"),
    ("divergences", "divergences", ".0f"),
    ("train_s", "wall s", ".1f"),
]


FUNNEL_DIMS = 10


def funnel_neutra_model():
    y = pyro.sample("y", dist.Normal(0.0, 3.0))
    scale = (y / 2).exp().unsqueeze(-1)
    pyro.sample("x", dist.Normal(torch.zeros(FUNNEL_DIMS - 1), scale).to_event(1))


def _funnel_stats(y, x, divergences: int, seconds: float) -> dict:
    """Sampler figures from draws y (chains, draws) and x (chains, draws, 9)."""
    import arviz

    y, x = np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
    ess_y = float(arviz.ess(y))
    ess_x = min(float(arviz.ess(x[..., i])) for i in range(x.shape[-1]))
    return {
        "divergences": int(divergences),
        "ess": min(ess_y, ess_x),
        "ess_y": ess_y,
        "mean_y_err": abs(float(y.mean())) / 3.0,
        "sd_y": float(y.std(ddof=1)),
        "sd_y_err": abs(float(y.std(ddof=1)) - 3.0) / 3.0,
        "min_y": float(y.min()),
        "below_minus_3": float((y < -3).mean()),
        "sample_s": seconds,
    }


def funnel_neutra_section(args, seeds) -> tuple[list, dict]:
    """Plain NUTS and NeuTra on the 10-dim funnel (see the module docstring)."""

    chains, warmup, draws = args.chains, args.warmup, args.neutra_draws
    plain_runs, neutra_runs = [], []
    for seed in seeds:
        ys, xs, divergences = [], [], 0
        started = time.perf_counter()
        for chain in range(chains):
            pyro.set_rng_seed(seed + chain)
            kernel = NUTS(funnel_neutra_model, jit_compile=True, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, disable_progbar=True)
            mcmc.run()
            got = mcmc.get_samples()
            ys.append(got["y"].numpy())
            xs.append(got["x"].numpy())
            divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
        plain = {"seed": seed} | _funnel_stats(
            np.stack(ys), np.stack(xs), divergences, time.perf_counter() - started
        )
        plain["fit_s"] = 0.0
        plain_runs.append(plain)
        pyro.clear_param_store()
        guide = pyrogen.AutoFlow(funnel_neutra_model)
        started = time.perf_counter()
        guide.fit(steps=args.steps if args.quick else None, seed=seed)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        idata = pyrogen.neutra(
            funnel_neutra_model,
            guide,
            num_samples=draws,
            warmup=warmup,
            num_chains=chains,
            seed=seed,
        )
        nt = {"seed": seed} | _funnel_stats(
            idata.posterior["y"].values,
            idata.posterior["x"].values,
            int(idata.sample_stats["diverging"].values.sum()),
            time.perf_counter() - started,
        )
        nt["fit_s"] = fit_s
        neutra_runs.append(nt)
        for label, run in (("NUTS  ", plain), ("NeuTra", nt)):
            print(
                f"funnel seed {seed} {label}: {run['divergences']} divergences, "
                f"min ESS {run['ess']:.0f}, mean(y) err {run['mean_y_err']:.3f}, "
                f"sd(y) {run['sd_y']:.2f}, min y {run['min_y']:.2f}, "
                f"fit {run['fit_s']:.1f} s, sampling {run['sample_s']:.1f} s",
                flush=True,
            )
    rows = []
    for label, mine in (("NUTS", plain_runs), ("NeuTra (AutoFlow defaults)", neutra_runs)):
        for run in mine:
            rows.append({"method": label} | run)
        total = {"method": label, "seed": "median"}
        for key in mine[0]:
            if key != "seed":
                total[key] = statistics.median(run[key] for run in mine)
        total["divergences_total"] = sum(run["divergences"] for run in mine)
        rows.append(total)
    return rows, {"runs": {"nuts": plain_runs, "neutra": neutra_runs}}


FN_COLUMNS = [
    ("method", "method"),
    ("seed", "seed"),
    ("divergences", "divergences", ".0f"),
    ("ess", "min ESS", ".0f"),
    ("ess_y", "ESS(y)", ".0f"),
    ("mean_y_err", "|mean(y)| / 3", ".3f"),
    ("sd_y", "sd(y) (truth 3)", ".2f"),
    ("min_y", "min y", ".2f"),
    ("below_minus_3", "P(y < -3) (truth 0.159)", ".3f"),
    ("fit_s", "fit s", ".1f"),
    ("sample_s", "sampling s", ".1f"),
]


def main(argv=None) -> int:
    options = harness.parser(__doc__)
    options.add_argument("--models", default="conjugate,funnel,eight_schools")
    options.add_argument("--guides", default=None, help=GUIDES)
    options.add_argument("--seeds", default=None, help="medians over them (0,1,2)")
    options.add_argument("--steps", type=int, default=None, help="SVI steps (800)")
    options.add_argument("--particles", type=int, default=16)
    options.add_argument("--lr", type=float, default=0.03)
    options.add_argument("--draws", type=int, default=None, help="guide draws (20000)")
    options.add_argument("--khat-samples", type=int, default=None, help="5000")
    options.add_argument("--elbo-particles", type=int, default=None, help="5000")
    options.add_argument("--chains", type=int, default=None, help="NUTS chains (4)")
    options.add_argument("--nuts-draws", type=int, default=None, help="per chain (1000)")
    options.add_argument("--warmup", type=int, default=None, help="funnel_neutra (500)")
    options.add_argument("--neutra-draws", type=int, default=None, help="funnel_neutra (500)")
    full = {"guides": GUIDES, "seeds": "0,1,2", "steps": 800, "draws": 20_000, "khat_samples": 5000}
    full |= {"elbo_particles": 5000, "chains": 4, "nuts_draws": 1000, "warmup": 500}
    quick = {
        "guides": "AutoFlow(iaf),AutoNormal",
        "seeds": "0",
        "steps": 10,
        "draws": 200,
        "khat_samples": 50,
        "elbo_particles": 20,
    }
    quick |= {"chains": 1, "nuts_draws": 20, "warmup": 20, "neutra_draws": 20}
    bench = harness.start(
        lambda a: f"flows_posterior_{a.models}" if a.models in SECTIONS else "flows_posterior",
        options,
        argv,
        full=full | {"neutra_draws": 500},
        quick=quick,
    )
    args = bench.args
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.models in SECTIONS:
        title, section, columns = SECTIONS[args.models]
        rows, extra = section(args, seeds)
        bench.write(title, [harness.Table(rows, columns)], data=extra)
        return 0
    problems = {
        "conjugate": conjugate_problem,
        "funnel": funnel_problem,
        "eight_schools": schools_problem,
    }
    guides = [g for g in args.guides.split(",") if g]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    runs, rows, references = [], [], {}
    nuts = None
    for model_name in args.models.split(","):
        # One data set and reference per model (seed 0); the seeds vary the training.
        model, model_args, reference = problems[model_name](0)
        if model_name == "eight_schools":
            nuts = schools_nuts(args.chains, args.nuts_draws, 0)
            reference["nuts_cross_check"] = nuts
            nuts_row = {"model": model_name, "guide": "NUTS (cross-check)"}
            nuts_row |= errors(nuts["mean"], nuts["sd"], reference)
            nuts_row["err"] = max(nuts_row["mean_err"], nuts_row["sd_err"])
            nuts_row["train_s"] = nuts["time_s"]
            rows.append(nuts_row)
            print(
                f"NUTS: r-hat {nuts['max_rhat']:.3f}, min ESS {nuts['min_ess']:.0f}, "
                f"{nuts['divergences']} divergences, {nuts['time_s']:.1f} s",
                flush=True,
            )
        references[model_name] = reference
        for guide_name in guides:
            mine = []
            for seed in seeds:
                run = run_one(model_name, model, model_args, reference, guide_name, args, seed)
                mine.append(run)
                print(
                    f"{model_name:14s} {guide_name:24s} seed {seed} mean {run['mean_err']:.3f} "
                    f"sd {run['sd_err']:.3f} khat {run['khat']:.2f} elbo {run['elbo']:.2f} "
                    f"{run['train_s']:.1f} s",
                    flush=True,
                )
            runs += mine
            row = {"model": model_name, "guide": guide_name}
            for key in ("err", "mean_err", "sd_err", "khat", "elbo", "train_s"):
                row[key] = statistics.median(run[key] for run in mine)
            gaps = [run["elbo_gap"] for run in mine if run["elbo_gap"] is not None]
            row["elbo_gap"] = statistics.median(gaps) if gaps else None
            row["worst_err"] = max(run["err"] for run in mine)
            rows.append(row)
    targets = {}
    for model_name in references:
        model_rows = [r for r in rows if r["model"] == model_name and r["guide"] in guides]
        flows = [r for r in model_rows if r["guide"].startswith("AutoFlow")]
        others = [r for r in model_rows if not r["guide"].startswith("AutoFlow")]
        if not flows or not others:
            continue
        best_other = min(others, key=lambda r: r["err"])
        best_flow = min(flows, key=lambda r: r["err"])
        targets[model_name] = {
            "best_autoflow": best_flow["guide"],
            "best_autoflow_err": best_flow["err"],
            "best_other": best_other["guide"],
            "best_other_err": best_other["err"],
            "lowest_error": best_flow["err"] <= best_other["err"],
            "khat_below_0.7": best_flow["khat"] < 0.7,
        }
    lines = [
        f"{args.steps} steps of ClippedAdam (lr {args.lr}, decayed 100-fold), Trace_ELBO with "
        f"{args.particles} vectorized particles, {args.draws} guide draws, k-hat from "
        f"{args.khat_samples} draws, ELBO from {args.elbo_particles} particles. Errors: largest "
        "|guide - reference| over all latent values, means in reference sds, sds relative to "
        f"the reference sd; error = the larger of the two; medians over seeds {args.seeds} "
        "and the worst seed's error."
    ]
    if nuts is not None:
        lines.append(
            f"Eight schools reference: exact quadrature; NUTS cross-check (non-centered, "
            f"{nuts['chains']} chains x {nuts['draws_per_chain']} draws): max split r-hat "
            f"{nuts['max_rhat']:.3f}, min ESS {nuts['min_ess']:.0f}, "
            f"{nuts['divergences']} divergences."
        )
        lines.append("")
    for name, t in targets.items():
        lines.append(
            f"* {name}: best AutoFlow ({t['best_autoflow']}) error {t['best_autoflow_err']:.3f} "
            f"vs best other ({t['best_other']}) {t['best_other_err']:.3f}: lowest error "
            f"{'met' if t['lowest_error'] else 'NOT met'}; k-hat < 0.7 "
            f"{'met' if t['khat_below_0.7'] else 'NOT met'}."
        )
    bench.write(
        "Posterior accuracy: AutoFlow against Pyro's autoguides",
        [harness.Table(rows, COLUMNS)],
        notes=["\n".join(lines)],
        data={"references": references, "runs": runs, "targets": targets},
    )
    return 0


SECTIONS = {
    "hier_logistic": (
        "Hierarchical logistic regression: guides and NeuTra against a NUTS reference",
        hier_logistic_section,
        HL_COLUMNS,
    ),
    "funnel_neutra": (
        "Neal's funnel in 10 dims: NeuTra against plain NUTS",
        funnel_neutra_section,
        FN_COLUMNS,
    ),
}


if __name__ == "__main__":
    raise SystemExit(main())

"""
Gaussian mixtures with enumeration
==================================

A Gaussian mixture is the simplest latent-variable model with a *discrete* latent: which
component produced each row. This tutorial fits one to the Old Faithful geyser data three
ways, all on the same Pyro model:

* **MAP**: point estimates of the mixture parameters (a ``Delta`` guide);
* **variational**: a mean-field posterior over them (a ``Normal`` guide per site);
* **NUTS**: draws from the exact posterior, with :func:`pyrogen.infer.mixture_nuts`.

Along the way it shows why the assignments are *enumerated* rather than sampled, what each
reported number is a bound on, how label switching is undone, how to choose the number of
components (BIC and PSIS-LOO) and how to check the fit against the data.

Every number is in nats, per example unless it says otherwise.
"""

# %%
# Setup
# -----
# ``PYROGEN_SMOKE=1`` (set by the test suite and CI) runs everything with tiny step counts
# so the whole script finishes in well under a minute; the numbers are then meaningless.
# Without it the tutorial uses realistic settings.

import os

import arviz as az
import matplotlib.pyplot as plt
import pyro
import torch
from pyro import poutine

import pyrogen
from pyrogen.data import OLD_FAITHFUL_COLUMNS
from pyrogen.diagnostics import (
    plot_clusters,
    plot_elbo,
    plot_weights_posterior,
    to_inference_data,
)
from pyrogen.models.gmm import CORRELATION, LOCS, SCALES, WEIGHTS

SMOKE = os.environ.get("PYROGEN_SMOKE") == "1"

MAP_STEPS = 10 if SMOKE else None  # None: the family's default (a short polish after EM)
VI_STEPS = 20 if SMOKE else None  # None: the family's default, with early stopping
SELECTION_STEPS = 5 if SMOKE else None
NUTS_WARMUP, NUTS_SAMPLES, NUTS_CHAINS = (20, 20, 2) if SMOKE else (500, 500, 2)
GUIDE_DRAWS = 40 if SMOKE else 1000

# The data are tiny (272 x 2), so torch's intra-op threads cost more in hand-offs than they
# save; on a busy machine NUTS ran ten times slower with two threads than with one.
torch.set_num_threads(1)
pyro.clear_param_store()
pyro.set_rng_seed(0)

# %%
# The data
# --------
# 272 eruptions of the Old Faithful geyser: how long each eruption lasted and how long the
# wait to the next one was, both in minutes. Two clusters are plain to see.

x = pyrogen.data.old_faithful()
print(x.shape, OLD_FAITHFUL_COLUMNS)

fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(x[:, 0], x[:, 1], s=8, alpha=0.6)
ax.set_xlabel("eruption duration (min)")
ax.set_ylabel("waiting time (min)")
ax.set_title("Old Faithful")

# %%
# The model, and why its assignments are enumerated
# -------------------------------------------------
# :class:`pyrogen.GaussianMixture` is a :class:`pyro.nn.PyroModule` whose ``model`` is the
# generative story
#
# .. math::
#
#    w \sim \mathrm{Dirichlet}(\alpha), \quad
#    \mu_k, \Sigma_k \sim \text{weak priors scaled to the data}, \quad
#    z_n \sim \mathrm{Categorical}(w), \quad
#    x_n \mid z_n \sim \mathcal{N}(\mu_{z_n}, \Sigma_{z_n}).
#
# The assignment :math:`z_n` is discrete, so it has no reparameterization gradient and
# sampling it inside SVI gives noisy score-function gradients. But it has only :math:`K`
# values, so there is no need to sample it at all. The ``assignment`` site is annotated
# ``infer={"enumerate": "parallel"}`` (what :func:`pyro.infer.config_enumerate` would add),
# and ``gmm.loss`` is ``TraceEnum_ELBO``, which evaluates every value of :math:`z_n` at once
# and sums them out:
#
# .. math::
#
#    \log p(x_n \mid \theta) = \log \sum_k w_k \, \mathcal{N}(x_n \mid \mu_k, \Sigma_k).
#
# That is exact: no sampling noise and no bound from the assignments. The trace shapes show
# the mechanism. ``poutine.enum`` puts the :math:`K = 2` values of ``assignment`` in a new
# tensor dimension to the left of the data plate, so the observation's log-density has
# shape ``(K, N)`` and the ELBO log-sum-exps over the first dimension. (With graphviz
# installed, ``pyro.render_model(gmm.model, model_args=(x,))`` draws the same structure.)

gmm = pyrogen.GaussianMixture(2, covariance="full")
gmm.setup(x, seed=0)  # creates the parameters: k-means++ then EM (pyrogen.fit does this too)

enumerated = poutine.enum(gmm.model, first_available_dim=-2)
trace = poutine.trace(enumerated).get_trace(x)
trace.compute_log_prob()
print(trace.format_shapes())

# %%
# Fitting by MAP
# --------------
# With ``inference="map"`` the guide puts a ``Delta`` on every global site, so the loss
# :func:`pyrogen.fit` minimises is the negative **log joint** at the point,
# :math:`-\frac1N [\log p(x \mid \hat\theta) + \log p(\hat\theta)]`: the exact
# log-likelihood plus the log prior, not a bound. :meth:`~pyrogen.GaussianMixture.setup`
# already climbed that log joint to its mode by MAP-EM (from the best of four k-means++
# starts), so the SVI steps only check it: they stop early and ``best_step`` 0 says they
# found nothing better.

result_map = pyrogen.fit(gmm, x, steps=MAP_STEPS, seed=0, progress=False)
print(
    f"{result_map.steps} steps, best at step {result_map.best_step}: "
    f"loss {result_map.best_loss:.4f} nats per example"
)
print("weights", gmm.weights_)
print("means", gmm.means_)
plot_elbo(result_map)

# %%
# Because the assignments are summed out, this loss can be checked against an independent
# computation. :meth:`~pyrogen.GaussianMixture.log_prob` is the log-sum-exp formula above
# (written directly in torch, not through Pyro); the log prior is the sum of the global
# sites' log-densities in the model conditioned on the point estimates. Their sum is the
# negative of ``gmm.loss`` to floating-point precision.

with torch.no_grad():
    log_joint = -gmm.loss.loss(gmm.model, gmm.guide, x)
    log_likelihood = gmm.log_prob(x).sum().item()
    estimates = gmm.point_estimates()
    prior_trace = poutine.trace(poutine.condition(gmm.model, data=estimates)).get_trace(x[:1])
    log_prior = sum(
        site["fn"].log_prob(site["value"]).sum().item()
        for name, site in prior_trace.nodes.items()
        if name in estimates
    )
print(f"log joint from TraceEnum_ELBO:        {log_joint:.3f} nats")
print(f"log-likelihood + log prior, directly: {log_likelihood + log_prior:.3f} nats")
print(f"mean log-likelihood per example:      {log_likelihood / len(x):.4f} nats")

# %%
# Hard and soft assignments
# -------------------------
# :meth:`~pyrogen.GaussianMixture.predict_proba` gives the responsibilities
# :math:`p(z_n = k \mid x_n, \hat\theta)`; :meth:`~pyrogen.GaussianMixture.predict` gives
# the most probable assignment, computed the Pyro way with ``infer_discrete`` at
# temperature 0. Given :math:`\theta` the rows are independent, so the two agree on the
# argmax; the responsibilities also say *how sure* the assignment is. Only a few rows sit
# between the clusters.

labels = gmm.predict(x)
proba = gmm.predict_proba(x)
assert torch.equal(labels, proba.argmax(-1))
confidence = proba.max(-1).values
ambiguous = (confidence < 0.9).nonzero().flatten()
print(f"{len(ambiguous)} of {len(x)} rows have max responsibility < 0.9:")
for n in ambiguous[:5].tolist():
    print(f"  row {n}: x = {x[n].numpy().round(2)} min, p(z | x) = {proba[n].numpy().round(3)}")

fig, ax = plt.subplots(figsize=(5, 4))
points = ax.scatter(x[:, 0], x[:, 1], c=proba[:, 0], cmap="coolwarm", s=10)
fig.colorbar(points, ax=ax, label="p(component 0 | x)")
ax.set_xlabel("eruption duration (min)")
ax.set_ylabel("waiting time (min)")
ax.set_title("Responsibilities")

# %%
# :func:`~pyrogen.diagnostics.plot_clusters` draws the components as 2-standard-deviation
# ellipses over the data.

plot_clusters(gmm, x, feature_names=OLD_FAITHFUL_COLUMNS)

# %%
# Variational inference
# ---------------------
# With ``inference="variational"`` the guide is mean-field: a ``Normal`` in each site's
# unconstrained space, pushed through the site's bijection (stick-breaking for the
# weights, ``exp`` for the scales, the LKJ Cholesky bijection for the correlations). The
# loss is now the negative ELBO per example,
#
# .. math::
#
#    \mathrm{ELBO} = \mathbb{E}_{q(\theta)}[\log p(x, \theta) - \log q(\theta)]
#    = \log p(x) - \mathrm{KL}(q(\theta) \,\|\, p(\theta \mid x)) \le \log p(x),
#
# a lower bound on the log evidence. Since the assignments are summed out, the **only**
# gap is the KL from the guide to the posterior over the mixture parameters. Each step uses
# one draw from :math:`q`, so the curve is noisy.

gmm_vi = pyrogen.GaussianMixture(2, covariance="full", inference="variational")
result_vi = pyrogen.fit(gmm_vi, x, steps=VI_STEPS, seed=0, progress=False)
print(f"{result_vi.steps} steps, final loss {result_vi.final_loss:.4f} nats per example")
plot_elbo(result_vi)

# %%
# The MAP loss and the negative ELBO are different quantities (a log joint at a point
# versus a bound on the log evidence), so do not compare them with each other. What *is*
# comparable is the exact log-likelihood at each fit's point estimate (for the variational
# fit, the guide's location pushed through the bijections):

print(f"MAP:         {gmm.log_prob(x).mean():.4f} nats per example")
print(f"variational: {gmm_vi.log_prob(x).mean():.4f} nats per example")

# %%
# NUTS, and label switching
# -------------------------
# :func:`pyrogen.infer.mixture_nuts` runs NUTS on the *same* ``model``. NUTS needs a
# continuous state, and it has one because Pyro sums the assignments out (collapsed
# sampling). Chains start at the MAP estimate.

idata_nuts = pyrogen.infer.mixture_nuts(
    gmm, x, num_samples=NUTS_SAMPLES, warmup=NUTS_WARMUP, num_chains=NUTS_CHAINS, seed=0
)
print(idata_nuts)

# %%
# R-hat near 1 and effective sample sizes in the hundreds say the chains agree and mix;
# divergent transitions would say the sampler could not follow the posterior's geometry.

summary = az.summary(idata_nuts, var_names=[WEIGHTS, LOCS, SCALES])
print(summary[["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"]].to_string())
print("divergent transitions:", int(idata_nuts.sample_stats["diverging"].sum()))

# %%
# These summaries are per component, which only makes sense if "component 0" means the
# same cluster in every draw. The likelihood is unchanged when the labels are permuted, so
# the posterior has :math:`K! = 2` identical modes, and a sampler that visits both mixes the
# clusters' parameters together. pyrogen undoes this with
# :meth:`~pyrogen.GaussianMixture.relabel`: for every draw it picks the permutation whose
# means (in data standard deviations) are closest to the point estimate's, solved exactly
# as an assignment problem, and applies it to every per-component site. ``mcmc`` has
# already done so. To see what it fixes, swap the labels in every other draw by hand:

draws = {
    name: torch.as_tensor(idata_nuts.posterior[name].values)
    for name in (WEIGHTS, LOCS, SCALES, CORRELATION)
}
switched = {name: value.clone() for name, value in draws.items()}
for value in switched.values():
    value[:, 1::2] = value[:, 1::2].flip(2)  # dim 2 is the component

print("posterior mean of the means, labels switched:\n", switched[LOCS].mean((0, 1)))
print("after gmm.relabel:\n", gmm.relabel(switched)[LOCS].mean((0, 1)))

# %%
# :func:`~pyrogen.diagnostics.plot_weights_posterior` shows the relabelled posterior of
# the mixing weights.

plot_weights_posterior(idata_nuts)

# %%
# How many components? BIC
# ------------------------
# :func:`pyrogen.select_n_components` fits one mixture per candidate :math:`K` and keeps
# the lowest BIC, :math:`-2 \log p(x \mid \hat\theta) + p \log N`: the exact
# log-likelihood at the estimate, penalised by :math:`\log N` per free parameter. It is a
# large-sample approximation to :math:`-2 \log p(x \mid K)`.

best, scores = pyrogen.select_n_components(
    x, range(1, 5), covariance="full", seed=0, steps=SELECTION_STEPS, progress=False
)
print("BIC by K:", {k: round(v, 1) for k, v in scores.items()})
print("chosen K:", best.n_components)

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(list(scores), list(scores.values()), "o-")
ax.set_xlabel("number of components K")
ax.set_ylabel("BIC (lower is better)")

# %%
# How many components? PSIS-LOO with ArviZ
# ----------------------------------------
# A Bayesian alternative is the expected log predictive density of a new row, estimated by
# Pareto-smoothed importance-sampling leave-one-out (``az.loo``). It needs posterior draws
# and the pointwise log-likelihood :math:`\log p(x_n \mid \theta_s)` (assignments summed
# out), which :func:`~pyrogen.diagnostics.to_inference_data` builds: from the NUTS draws
# (``mcmc`` already returned them), or from guide draws of an SVI fit. For the variational
# fit, LOO is computed under :math:`q` instead of the posterior; the Pareto :math:`\hat k`
# diagnostic says when that approximation is not to be trusted.

idata_vi = to_inference_data(result_vi, x, num_samples=GUIDE_DRAWS, seed=0)

gmm_vi3 = pyrogen.GaussianMixture(3, covariance="full", inference="variational")
result_vi3 = pyrogen.fit(gmm_vi3, x, steps=VI_STEPS, seed=0, progress=False)
idata_vi3 = to_inference_data(result_vi3, x, num_samples=GUIDE_DRAWS, seed=0)

print(az.loo(idata_nuts))
comparison = az.compare(
    {"K=2 NUTS": idata_nuts, "K=2 variational": idata_vi, "K=3 variational": idata_vi3}
)
print(comparison[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].to_string())

# %%
# How to read the table: ``elpd_loo`` is summed over the 272 rows (divide by 272 for nats
# per example; higher is better), ``elpd_diff`` is the gap to the top-ranked model and
# ``dse`` its standard error. A gap within about two standard errors is noise.
#
# In a full run (without ``PYROGEN_SMOKE``), the three-component fit comes out a few nats
# ahead of the two-component NUTS posterior, with a standard error larger than the gap: no
# real evidence for a third component, in line with BIC. The variational K=2 fit trails
# the NUTS posterior of the *same* model by about ten nats, with high Pareto
# :math:`\hat k`: its draws come from the mean-field :math:`q`, which ignores the
# posterior's correlations, so importance sampling from them is unreliable. For
# predictive comparisons, prefer exact-posterior draws.

# %%
# Posterior predictive check
# --------------------------
# Finally, does the fitted model generate data like the data? With
# ``posterior_predictive=True``, :func:`~pyrogen.diagnostics.to_inference_data` draws a
# replicate data set of 272 rows for every posterior draw (here the NUTS draws). ArviZ
# overlays the replicates' densities on the observed one; we look at the waiting times.

idata_ppc = to_inference_data(draws, x, model=gmm, seed=0, posterior_predictive=True)
fig, ax = plt.subplots(figsize=(5, 3))
num_pp_samples = min(100, NUTS_CHAINS * NUTS_SAMPLES)
az.plot_ppc(idata_ppc, coords={"feature": [1]}, num_pp_samples=num_pp_samples, ax=ax)
ax.set_xlabel("waiting time (min)")

# %%
# The same check as a number: the share of waits shorter than 60 minutes in the data, and
# where it falls among the replicates (a posterior predictive p-value near 0 or 1 would
# flag a misfit).

replicates = torch.as_tensor(idata_ppc.posterior_predictive["obs"].values)
observed_share = (x[:, 1] < 60).double().mean().item()
replicate_share = (replicates[..., 1] < 60).double().mean(-1).flatten()
p_value = (replicate_share >= observed_share).double().mean().item()
print(f"observed share of waits < 60 min: {observed_share:.3f}")
print(f"replicated: {replicate_share.mean():.3f} +- {replicate_share.std():.3f}, p = {p_value:.2f}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(replicates[..., 1].flatten(), bins=40, density=True, alpha=0.5, label="replicated")
ax.hist(x[:, 1], bins=40, density=True, histtype="step", color="k", label="observed")
ax.set_xlabel("waiting time (min)")
ax.legend()

# %%
# Summary
# -------
# * Enumerating the assignments makes the mixture's likelihood exact inside Pyro: the MAP
#   loss is the log joint, the variational ELBO's only gap is the KL over the parameters,
#   and NUTS samples the collapsed posterior.
# * The same ``model`` serves MAP, mean-field VI and NUTS; ``gmm.model``, ``gmm.guide`` and
#   ``gmm.loss`` also work with raw ``pyro.infer.SVI``.
# * Per-component posterior summaries need relabelling; ``mcmc`` does it for you.
# * BIC and PSIS-LOO both pick K; posterior predictive checks say whether the chosen model
#   reproduces the data.

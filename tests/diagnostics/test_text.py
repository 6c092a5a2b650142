"""Run summaries as text (pyrogen.diagnostics.text): what ``pyrogen fit`` and ``evaluate``
print, each number named with the bound it is."""

from __future__ import annotations

from pathlib import Path

from pyrogen.diagnostics.text import (
    describe_evaluation,
    describe_fit,
    describe_model,
    describe_shape,
    parameter_table,
    score_lines,
    statistic_lines,
)

MIXTURE = {
    "family": "gmm",
    "config": {"covariance": "full", "inference": "map"},
    "data": "Old Faithful (bundled)",
    "columns": ["eruptions", "waiting"],
    "n_components": 2,
    "selection": {"criterion": "bic", "scores": {"1": 2322.5, "2": 2.0}},
    "log_likelihood_per_row": -4.25,
    "bic": 2.0,
    "aic": 1.5,
    "inference": "nuts",
    "mcmc": {"num_chains": 2, "num_samples": 5, "warmup": 6, "divergences": 0},
    "weights": [0.35, 0.65],
    "means": [[2.0, 54.5], [4.3, 80.0]],
}


def test_describe_fit_of_a_mixture():
    text = describe_fit(MIXTURE, (272, 2), Path("runs/gmm"))
    lines = text.splitlines()
    assert lines[0] == "data            Old Faithful (bundled): 272 rows x 2 columns " \
        "(eruptions, waiting)"  # fmt: skip
    assert "model           gmm, full covariance, nuts inference" in lines
    assert "components      2 (chosen by BIC)" in lines
    assert "  K=2   BIC         2.00  <- chosen" in lines
    assert "log-likelihood  -4.2500 nats per row (exact, at the point estimates, mean over rows)"
    assert "NUTS            2 chains x 5 draws (6 warm-up), 0 divergences" in lines
    assert lines[-1] == "run folder      runs/gmm"
    assert any("mean eruptions" in line for line in lines)


def test_describe_fit_of_images_names_the_bounds():
    summary = {
        "family": "vae",
        "config": {"latent_dim": 2, "likelihood": "bernoulli", "encoder": "mlp"},
        "data": "MNIST",
        "epochs": 1,
        "batch_size": 128,
        "training": {"steps": 4, "time_s": 1.25, "device": "cpu", "processes": 2},
        "test": {"n_rows": 10, "elbo_per_example": -100.0, "log_likelihood_per_example": -95.0,
                 "iw_samples": 5, "bits_per_dim": 0.17},
    }  # fmt: skip
    text = describe_fit(summary, (500, 784), Path("r"))
    assert "train 500 rows, test 10 rows of shape (784,); latent z (2,)" in text
    assert "1 epoch(s): 4 steps of up to 128 rows, 1.2 s on cpu, in 2 data-parallel" in text
    assert "test ELBO       -100.0000 nats per example (a lower bound on log p(x))" in text
    assert "test log p(x)   -95.0000 nats per example (IWAE bound, K = 5)" in text


def test_score_lines_of_a_long_conditional_quantity_and_of_accuracy():
    stats = {"quantity": "log p(x_missing | x_given, y)", "log_likelihood_per_example": -3.0,
             "accuracy": 0.5, "labelled_rows": 8}  # fmt: skip
    lines = score_lines(stats)
    assert lines[0] == "log-lik.        -3.0000 nats per example: log p(x_missing | x_given, " \
        "y) (exact)"  # fmt: skip
    assert lines[1].startswith("accuracy        0.5000 of 8 labelled rows")


def test_the_small_pieces():
    assert describe_shape((3, 1, 8, 8)) == "3 rows of shape (1, 8, 8)"
    assert describe_model({"family": "ssvae", "config": {"num_classes": 3,
        "classifier_weight": 2.0, "labelled_share": 0.5, "beta": 2.0}}) == (
        "ssvae, 3 classes, classifier weight 2, labelled share 0.5, beta 2"
    )  # fmt: skip
    assert statistic_lines({"bic": 1.234}) == ["BIC             1.23"]
    assert parameter_table([1.0], [[2.0]], None) == ["component  weight  mean x0",
                                                      "        0  1.0000        2"]  # fmt: skip


def test_describe_evaluation_of_bounds_lists_what_was_given():
    stats = {"elbo_per_example": -10.0, "log_likelihood_per_example": -9.5, "iw_samples": 3}
    text = describe_evaluation(
        "runs/vae", {"family": "vae", "config": {"likelihood": "bernoulli"}}, "images.npy",
        stats, preprocessing="--binarize none: as they are", labels=None,
    )  # fmt: skip
    assert text.splitlines() == [
        "model           runs/vae (vae, bernoulli likelihood)",
        "data            images.npy",
        "preprocessing   --binarize none: as they are",
        "ELBO            -10.0000 nats per example (a lower bound on log p(x))",
        "log p(x)        -9.5000 nats per example (IWAE bound, K = 3)",
    ]


def test_scores_that_are_not_finite_print_as_nan_and_inf():
    stats = {"elbo_per_example": None, "log_likelihood_per_example": float("-inf")}
    lines = score_lines({**stats, "bits_per_dim": float("nan"), "iw_samples": 5})
    assert "the score is not finite" in lines[0]
    assert lines[1].split()[:2] == ["ELBO", "nan"]
    assert lines[2].split()[:3] == ["log", "p(x)", "-inf"] and lines[3].split()[1] == "nan"
    finite = {"elbo_per_example": -2.0, "log_likelihood_per_example": -1.0}
    assert "not finite" not in "\n".join(score_lines(finite))


def test_statistic_lines_say_how_an_energy_models_log_z_was_computed():
    summary = {
        "log_likelihood_per_row": -1.5,
        "log_partition": 2.25,
        "log_partition_method": "quadrature",
        "log_partition_error": 3e-9,
    }
    assert (
        statistic_lines(summary)[-1]
        == "log Z           2.2500 nats by quadrature (error 3e-09 nats)"
    )

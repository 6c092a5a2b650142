"""Unsupervised clustering of MNIST digits with pyrogen's GaussianMixtureVAE.

``pyrogen.GaussianMixtureVAE((784,), latent_dim=10, n_components=10)`` (its defaults: MLP
784-400-10, Bernoulli likelihood) is trained without labels on the 60,000 MNIST training
images (grey levels in [0, 1], not binarized), in two ``pyrogen.fit`` calls:

1. ``--warmup-epochs`` epochs from the model's initial prior (component means drawn from
   N(0, I), unit scales): the same model, used as a warm-up for the encoder;
2. ``model.init_components(x_train)``: a diagonal ``pyrogen.GaussianMixture`` (k-means++
   and EM) fitted to the posterior means of the training images becomes the prior;
3. ``--epochs`` more epochs (a new Adam: ``fit`` builds its own).

The clusters are ``model.predict(x)`` (the most probable component at the posterior mean of
z), scored with :func:`pyrogen.diagnostics.clustering_accuracy`: the best one-to-one matching
of the 10 clusters to the 10 digits (Hungarian algorithm). Accuracy is reported on the
10,000 test images (never seen in training) and on the 60,000 training images, after every
epoch of the second phase, right after ``init_components``, and at the end.

References, in the same run, on the same images:

* **k-means** (pyrogen's k-means++ seeding and Lloyd iterations, as
  ``GaussianMixture.setup`` starts with) on the raw pixels and on PCA-50 of them;
* **GaussianMixture(10, "diag")** fitted with ``setup`` (k-means++, then EM) on PCA-50 of the
  pixels (a diagonal mixture on the raw 784 pixels is dominated by the nearly constant
  border pixels);
* **VAE + GMM**: a plain ``pyrogen.VAE((784,), latent_dim=10, hidden=(400,))`` (the same
  networks as the GMVAE's, with a N(0, I) prior) trained for the same total number of epochs,
  then ``GaussianMixture(10, "diag")`` on the posterior means of the training images.

Published: VaDE (Jiang et al., 2017) 94.46% with pretraining; GMVAE (Dilokthanakul et al.,
2016) 82.31% (+-3.75) with K=10 and 87.82% with K=16. Both train for hundreds of epochs
with bigger networks; this benchmark gets a few epochs on two CPU cores.

Usage::

    python benchmarks/vae_clustering.py            # full run (13 min on 1 thread, load ~3)
    python benchmarks/vae_clustering.py --quick    # smoke test (< 1 min)

Writes ``benchmarks/results/vae_clustering.json`` and ``.md`` (``--out`` to change the stem).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"
NAME = "vae_clustering"
DEFAULT_MNIST = Path(os.environ.get("PYROGEN_DATA", REPO.parent / "shared" / "data")) / "mnist"

K = 10
LATENT_DIM = 10
HIDDEN = (400,)
PCA_DIM = 50
DEFAULT_WARMUP_EPOCHS = 5
DEFAULT_EPOCHS = 30
PUBLISHED = (
    ("VaDE (Jiang et al., 2017), with pretraining", "94.46%"),
    ("GMVAE (Dilokthanakul et al., 2016), K=10", "82.31% (+-3.75)"),
    ("GMVAE (Dilokthanakul et al., 2016), K=16", "87.82%"),
)


# --- data ------------------------------------------------------------------------------------


def load_data(args) -> dict[str, Any]:
    """MNIST train/test images as (N, 784) float32 grey levels in [0, 1], with labels."""
    import pyrogen

    root = Path(args.mnist)
    if not root.is_dir():
        raise SystemExit(f"MNIST not found in {root} (--mnist PATH)")
    out = {}
    for split, limit in (("train", args.n_train), ("test", args.n_test)):
        images, labels = pyrogen.data.mnist(root, split)
        images = images.reshape(images.shape[0], -1)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        out[split] = (images.contiguous(), labels)
    return out


def pca(train, test, dim: int):
    """Project both onto the top ``dim`` principal axes of ``train`` (float64 eigh)."""
    import torch

    work = train.double()
    mean = work.mean(0)
    centred = work - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred / (work.shape[0] - 1))
    axes = vectors[:, -dim:].flip(-1)  # largest first
    return centred @ axes, (test.double() - mean) @ axes


def scores(labels_train, clusters_train, labels_test, clusters_test) -> dict[str, float]:
    from pyrogen.diagnostics import clustering_accuracy

    return {
        "test_accuracy": clustering_accuracy(labels_test, clusters_test),
        "train_accuracy": clustering_accuracy(labels_train, clusters_train),
        "clusters_used_test": int(len(set(clusters_test.tolist()))),
    }


# --- the pixel baselines ---------------------------------------------------------------------


def kmeans_clusters(train, test, seed: int):
    """k-means++ then Lloyd (pyrogen's own, as GaussianMixture.setup starts); test rows go to
    the nearest final centre."""
    import torch

    from pyrogen.models.mixture_em import kmeans, kmeans_plusplus

    work = train.double()
    generator = torch.Generator().manual_seed(seed)
    centres = kmeans_plusplus(work, K, generator)
    labels = kmeans(work, centres)
    centres = torch.stack([work[labels == k].mean(0) for k in range(K)])
    test_labels = torch.cdist(test.double(), centres).argmin(-1)
    return labels, test_labels


def gmm_clusters(train, test, seed: int):
    """GaussianMixture(K, "diag") fitted by ``setup`` (k-means++ and EM); MAP assignments."""
    import pyrogen

    gmm = pyrogen.GaussianMixture(K, covariance="diag")
    gmm.setup(train.double(), seed=seed)
    return gmm.predict(train.double()), gmm.predict(test.double())


def run_baseline(name, description, fn, data, *args) -> dict[str, Any]:
    (_, y_train), (_, y_test) = data["train"], data["test"]
    print(f"{name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    train_clusters, test_clusters = fn(*args)
    wall = time.perf_counter() - started
    row = {
        "method": name,
        "description": description,
        "wall_s": wall,
        **scores(y_train, train_clusters, y_test, test_clusters),
    }
    print(
        f"    test {row['test_accuracy']:.4f}, train {row['train_accuracy']:.4f}, {wall:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    return row


# --- the VAEs --------------------------------------------------------------------------------


def epoch_callback(steps_per_epoch: int, every_epoch, offset: int = 0):
    """A fit callback calling ``every_epoch(epoch, model)`` at the end of each epoch."""
    losses: list[float] = []

    def callback(step, loss, model) -> None:
        losses.append(loss)
        if step % steps_per_epoch == 0:
            epoch_loss = sum(losses[-steps_per_epoch:]) / steps_per_epoch
            every_epoch(offset + step // steps_per_epoch, model, epoch_loss)

    return callback


def train_gmvae(args, data, fit_kwargs) -> dict[str, Any]:
    import torch

    import pyrogen

    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    torch.manual_seed(args.seed)
    model = pyrogen.GaussianMixtureVAE((784,), latent_dim=LATENT_DIM, n_components=K)
    steps_per_epoch = math.ceil(x_train.shape[0] / fit_kwargs["batch_size"])
    history: list[dict[str, Any]] = []
    eval_s = [0.0]
    started = time.perf_counter()

    def evaluate(epoch, trained, loss, phase) -> None:
        tick = time.perf_counter()
        entry = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": loss,
            **scores(y_train, trained.predict(x_train), y_test, trained.predict(x_test)),
        }
        eval_s[0] += time.perf_counter() - tick
        entry["elapsed_s"] = time.perf_counter() - started
        history.append(entry)
        print(
            f"    GMVAE epoch {epoch} ({phase}): test {entry['test_accuracy']:.4f}, train "
            f"{entry['train_accuracy']:.4f}, loss "
            + ("-" if loss is None else f"{loss:.2f}")
            + f" nats, {entry['elapsed_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    warmup = pyrogen.fit(
        model,
        x_train,
        epochs=args.warmup_epochs,
        progress=False,
        callbacks=(
            epoch_callback(steps_per_epoch, lambda e, m, loss: evaluate(e, m, loss, "warm-up")),
        ),
        **fit_kwargs,
    )
    tick = time.perf_counter()
    model.init_components(x_train, seed=args.seed)
    init_s = time.perf_counter() - tick
    evaluate(args.warmup_epochs, model, None, "after init_components")
    second = pyrogen.fit(
        model,
        x_train,
        epochs=args.epochs,
        progress=False,
        callbacks=(
            epoch_callback(
                steps_per_epoch,
                lambda e, m, loss: evaluate(e, m, loss, "trained"),
                offset=args.warmup_epochs,
            ),
        ),
        **fit_kwargs,
    )
    wall = time.perf_counter() - started
    final = history[-1]
    weights = torch.softmax(model.component_logits.detach(), -1)
    return {
        "method": "GaussianMixtureVAE",
        "description": f"{args.warmup_epochs} epochs, init_components, {args.epochs} epochs",
        "config": model.config,
        "steps": warmup.steps + second.steps,
        "wall_s": wall,
        "eval_s": eval_s[0],
        "train_s": wall - eval_s[0],
        "init_components_s": init_s,
        "per_step_ms": 1e3 * (wall - eval_s[0] - init_s) / (warmup.steps + second.steps),
        "final_loss": second.final_loss,
        "component_weights": weights.tolist(),
        "history": history,
        "after_init_test_accuracy": next(
            h["test_accuracy"] for h in history if h["phase"] == "after init_components"
        ),
        "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"],
        "clusters_used_test": final["clusters_used_test"],
    }


def train_vae_gmm(args, data, fit_kwargs) -> dict[str, Any]:
    """A plain VAE of the same size, same epochs; a diagonal GMM on its posterior means."""
    import torch

    import pyrogen

    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    torch.manual_seed(args.seed)
    vae = pyrogen.VAE((784,), latent_dim=LATENT_DIM, hidden=HIDDEN)
    total_epochs = args.warmup_epochs + args.epochs
    steps_per_epoch = math.ceil(x_train.shape[0] / fit_kwargs["batch_size"])
    history: list[dict[str, Any]] = []
    eval_s = [0.0]
    started = time.perf_counter()

    def cluster(trained):
        gmm = pyrogen.GaussianMixture(K, covariance="diag")
        z_train, _ = trained.encode(x_train)
        z_test, _ = trained.encode(x_test)
        gmm.setup(z_train.double(), seed=args.seed)
        return gmm.predict(z_train.double()), gmm.predict(z_test.double())

    def evaluate(epoch, trained, loss) -> None:
        if epoch not in (args.warmup_epochs, total_epochs) and not args.vae_every_epoch:
            return
        tick = time.perf_counter()
        train_clusters, test_clusters = cluster(trained)
        entry = {
            "epoch": epoch,
            "train_loss": loss,
            **scores(y_train, train_clusters, y_test, test_clusters),
        }
        eval_s[0] += time.perf_counter() - tick
        entry["elapsed_s"] = time.perf_counter() - started
        history.append(entry)
        print(
            f"    VAE epoch {epoch}: GMM on z: test {entry['test_accuracy']:.4f}, train "
            f"{entry['train_accuracy']:.4f}, loss {loss:.2f} nats, {entry['elapsed_s']:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    result = pyrogen.fit(
        vae,
        x_train,
        epochs=total_epochs,
        progress=False,
        callbacks=(epoch_callback(steps_per_epoch, evaluate),),
        **fit_kwargs,
    )
    wall = time.perf_counter() - started
    final = history[-1]
    return {
        "method": "VAE + GMM on z",
        "description": f"VAE {total_epochs} epochs, then GaussianMixture(10, 'diag') on z",
        "config": vae.config,
        "steps": result.steps,
        "wall_s": wall,
        "eval_s": eval_s[0],
        "train_s": wall - eval_s[0],
        "per_step_ms": 1e3 * (wall - eval_s[0]) / result.steps,
        "final_loss": result.final_loss,
        "history": history,
        "test_accuracy": final["test_accuracy"],
        "train_accuracy": final["train_accuracy"],
        "clusters_used_test": final["clusters_used_test"],
    }


# --- report ----------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


COLUMNS = (
    ("method", "method"),
    ("description", "settings"),
    ("test_accuracy", "test acc", _pct),
    ("train_accuracy", "train acc", _pct),
    ("clusters_used_test", "clusters used"),
    ("minutes", "wall (min)", ".2f"),
)
HISTORY_COLUMNS = (
    ("epoch", "epoch"),
    ("phase", "phase"),
    ("train_loss", "loss (nats)", ".2f"),
    ("test_accuracy", "test acc", _pct),
    ("train_accuracy", "train acc", _pct),
    ("clusters_used_test", "clusters used"),
)
PUBLISHED_COLUMNS = (("method", "published"), ("accuracy", "accuracy"))


def table_rows(rows) -> list[dict[str, Any]]:
    return [{**row, "minutes": row["wall_s"] / 60} for row in rows]


def markdown_report(payload) -> str:
    machine, versions, settings = payload["machine"], payload["versions"], payload["settings"]
    git = payload["git"]
    gmvae = next((row for row in payload["rows"] if row["method"] == "GaussianMixtureVAE"), None)
    lines = [
        "# Unsupervised MNIST clustering: pyrogen GaussianMixtureVAE",
        "",
        f"Run {payload['timestamp']} on {machine['cpu_model']} "
        f"({machine['usable_cpus']} usable cores, {machine['ram_gib']} GiB RAM), "
        f"{settings['threads']} thread(s). python {versions['python']}, torch "
        f"{versions['torch']}, pyro {versions['pyro']}, pyrogen {versions['pyrogen']}"
        + (
            f" (git {git['commit'][:10]}{', dirty' if git['dirty'] else ''})"
            if git.get("commit")
            else ""
        )
        + f". Data: {settings['data']}; trained on {settings['n_train']:,} training images "
        f"without labels, scored on {settings['n_test']:,} test images and on the training "
        "images.",
        "",
        f"`GaussianMixtureVAE((784,), latent_dim={LATENT_DIM}, n_components={K})` (MLP "
        f"784-{HIDDEN[0]}-{LATENT_DIM}, Bernoulli likelihood): `pyrogen.fit(..., "
        f"epochs={settings['warmup_epochs']}, batch_size={settings['batch_size']}, "
        f"lr={settings['lr']:g})`, then `init_components(x_train)`, then `fit(..., "
        f"epochs={settings['epochs']})`. Clusters: `model.predict(x)`; accuracy: "
        "`pyrogen.diagnostics.clustering_accuracy` (best one-to-one matching of clusters to "
        "digits). VAE + GMM: `pyrogen.VAE` with the same networks and the same total epochs, "
        f"then `GaussianMixture({K}, 'diag')` on the posterior means. Pixel baselines: "
        f"k-means++ and Lloyd; `GaussianMixture({K}, 'diag').setup` (k-means++ and EM); "
        f"PCA-{PCA_DIM} from the training images. Seed {settings['seed']}.",
        "",
        common.markdown_table(table_rows(payload["rows"]), COLUMNS),
        "",
    ]
    if gmvae is not None:
        lines += [
            "GaussianMixtureVAE, epoch by epoch (accuracy after each epoch; *after "
            "init_components* is the warm-up network with the fitted prior):",
            "",
            common.markdown_table(gmvae["history"], HISTORY_COLUMNS),
            "",
        ]
    vae = next((row for row in payload["rows"] if row["method"] == "VAE + GMM on z"), None)
    if vae is not None:
        lines += [
            "VAE + GMM on z, with the GMM fitted after these epochs of the plain VAE:",
            "",
            common.markdown_table(vae["history"], [c for c in HISTORY_COLUMNS if c[0] != "phase"]),
            "",
        ]
    lines += [
        common.markdown_table(
            [{"method": m, "accuracy": a} for m, a in PUBLISHED], PUBLISHED_COLUMNS
        ),
        "",
        f"Total run time {payload['summary']['total_s'] / 60:.1f} min.",
        "",
    ]
    lines += common.busy_machine_note(payload["summary"], machine, "wall times are inflated.")
    if settings["quick"]:
        lines += ["*Quick mode: a smoke test on a subset, not the reference numbers.*", ""]
    return "\n".join(lines)


# --- driver ----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test on a subset (< 1 min)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (0: library defaults)"
    )
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help=f"epochs before init_components (default {DEFAULT_WARMUP_EPOCHS})",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"epochs after it (default {DEFAULT_EPOCHS})"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default VAE.fit_defaults")
    parser.add_argument("--lr", type=float, default=None, help="default VAE.fit_defaults")
    parser.add_argument(
        "--vae-every-epoch",
        action="store_true",
        help="fit the GMM on the plain VAE's codes after every epoch (default: after the "
        "warm-up epochs and at the end)",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: pixels, vae, gmvae"
    )
    parser.add_argument("--n-train", type=int, default=None, help="use the first n train rows")
    parser.add_argument("--n-test", type=int, default=None, help="use the first n test rows")
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="MNIST IDX folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / NAME, help="output path stem (.json and .md)"
    )
    args = parser.parse_args(argv)
    if args.warmup_epochs is None:
        args.warmup_epochs = 1 if args.quick else DEFAULT_WARMUP_EPOCHS
    if args.epochs is None:
        args.epochs = 1 if args.quick else DEFAULT_EPOCHS
    if args.quick:
        args.n_train = args.n_train or 5000
        args.n_test = args.n_test or 2000
    args.skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    unknown = args.skip - {"pixels", "vae", "gmvae"}
    if unknown:
        parser.error(f"--skip: unknown {sorted(unknown)}")
    if args.threads == 0:
        args.threads = None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_before = common.load_average()
    git = common.git_revision(REPO)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    limiter = common.set_threads(args.threads, preload=("numpy", "scipy.linalg", "torch"))  # noqa: F841
    import pyrogen

    defaults = pyrogen.GaussianMixtureVAE.fit_defaults
    fit_kwargs = {
        "batch_size": args.batch_size or defaults["batch_size"],
        "lr": args.lr or defaults["lr"],
        "seed": args.seed,
    }
    data = load_data(args)
    (x_train, _), (x_test, _) = data["train"], data["test"]
    rows = []
    if "gmvae" not in args.skip:
        print("GaussianMixtureVAE ...", file=sys.stderr, flush=True)
        rows.append(train_gmvae(args, data, fit_kwargs))
    if "vae" not in args.skip:
        print("VAE + GMM ...", file=sys.stderr, flush=True)
        rows.append(train_vae_gmm(args, data, fit_kwargs))
    if "pixels" not in args.skip:
        tick = time.perf_counter()
        pca_train, pca_test = pca(x_train, x_test, PCA_DIM)
        pca_s = time.perf_counter() - tick
        for name, description, fn, inputs in (
            (
                "k-means, pixels",
                "k-means++ and Lloyd on 784 pixels",
                kmeans_clusters,
                (x_train, x_test),
            ),
            (
                "k-means, PCA-50",
                f"the same on PCA-{PCA_DIM}",
                kmeans_clusters,
                (pca_train, pca_test),
            ),
            (
                "GaussianMixture diag, PCA-50",
                f"setup (k-means++ and EM) on PCA-{PCA_DIM}",
                gmm_clusters,
                (pca_train, pca_test),
            ),
        ):
            row = run_baseline(name, description, fn, data, *inputs, args.seed)
            if "PCA" in name:
                row["pca_s"] = pca_s
            rows.append(row)
    if not rows:
        raise SystemExit("--skip: nothing left to run")
    load_after = common.load_average()
    payload = {
        "benchmark": NAME,
        "timestamp": common.utc_timestamp(),
        "machine": common.machine_info(),
        "versions": common.versions(("torch", "pyro", "numpy", "scipy", "pyrogen")),
        "threads": common.thread_info(),
        "git": git,
        "settings": {
            "quick": args.quick,
            "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "data": f"MNIST ({args.mnist}), grey levels in [0, 1]",
            "n_train": int(x_train.shape[0]),
            "n_test": int(x_test.shape[0]),
            "warmup_epochs": args.warmup_epochs,
            "epochs": args.epochs,
            "batch_size": fit_kwargs["batch_size"],
            "lr": fit_kwargs["lr"],
            "seed": args.seed,
            "n_components": K,
            "latent_dim": LATENT_DIM,
            "hidden": HIDDEN,
            "pca_dim": PCA_DIM,
            "published": dict(PUBLISHED),
        },
        "rows": rows,
        "summary": {
            "test_accuracy": {row["method"]: row["test_accuracy"] for row in rows},
            "load_average_before": load_before,
            "load_average_after": load_after,
            "total_s": time.perf_counter() - started,
        },
    }
    stem = Path(args.out)
    json_path = common.write_json_atomic(stem.with_suffix(".json"), payload)
    md_path = common.write_text_atomic(stem.with_suffix(".md"), markdown_report(payload))
    print(common.text_table(table_rows(rows), COLUMNS))
    print(f"\nwrote {json_path} and {md_path} in {payload['summary']['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

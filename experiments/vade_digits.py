"""VaDE clustering accuracy on scikit-learn's digits (1797 8x8 images, 10 classes).

A sanity check of `jaxvae.models.vade` against the paper (Jiang et al. 2017: 94.46 % ACC on
MNIST) on data bundled with scikit-learn, so it needs no download and no trainer: a small
self-contained loop runs the same stages the trainer runs (autoencoder pretraining ->
`gmm_init` -> the joint ELBO) and prints the unsupervised accuracy (Hungarian) and NMI of
  - k-means on the raw pixels (a baseline),
  - the pretrained autoencoder's latent means + the fitted GMM (VaDE's starting point),
  - VaDE after joint training (argmax_c q(c | x) at the latent mean).

  python experiments/vade_digits.py --pretrain-epochs 50 --epochs 100 --seed 0
  python experiments/vade_digits.py --hidden 256 256 512 --seed 0   # ~2.5x faster on CPU
  python experiments/vade_digits.py --hidden 256 256 512 --seed 0 --start tsne_inputs

The mixture starts from a GMM on the pretrained latent means (the paper's start; ten-seed
median accuracy with 256-256-512: 0.82, with the paper's network 0.80) or, with `--start
tsne_inputs` (`model.gmm_start`), from the clusters of a t-SNE of the pixels (median 0.93
with either; BUILD_NOTES.md).

(with the package installed, `pip install -e .`, or `PYTHONPATH=.` from the repository root)

Architecture as in the paper (d-500-500-2000-10, Adam 2e-3 decayed x0.9 every 10 epochs,
batch 100) except that the backbone is jaxvae's BasicVAE, which has BatchNorm.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score as nmi  # noqa: E402

from jaxvae.data.spec import DataSpec  # noqa: E402
from jaxvae.evaluators import clustering as analysis  # noqa: E402
from jaxvae.models import vade  # noqa: E402
from jaxvae.training import state as train  # noqa: E402
from jaxvae.variants import vade as vade_variant  # noqa: E402

BATCH = 100


def make_config(args) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = args.seed
  c.model = ml_collections.ConfigDict(
    dict(
      name="vade",
      hidden=tuple(args.hidden),
      latent_dim=args.latent_dim,
      dropout=args.dropout,
      n_clusters=10,
      pretrain_epochs=args.pretrain_epochs,
      gmm_lr_scale=args.gmm_lr_scale,
      pretrain_noise=args.pretrain_noise,
      gmm_start="tsne_inputs" if args.start == "tsne_inputs" else "latent",
      output_activation="sigmoid",
    )
  )
  c.objective = ml_collections.ConfigDict({"recon": "bce"})
  c.train = ml_collections.ConfigDict({"epochs": args.epochs, "lr": args.lr})
  return c


def load() -> tuple[np.ndarray, np.ndarray]:
  digits = load_digits()
  return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)


def shifted(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
  """Each image moved by a random whole number of pixels in [-shift, shift] along each axis,
  zero-filled: the augmentation of DEC-DA (Guo et al. 2018), which pretrains the autoencoder
  on shifted digits so that its latent does not separate a digit from itself moved by one
  pixel."""
  if shift == 0:
    return x
  n, h, w = x.shape
  padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift)))
  dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
  rows = dy[:, None] + np.arange(h)[None, :]
  cols = dx[:, None] + np.arange(w)[None, :]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def epoch_batches(x: np.ndarray, rng: np.random.Generator, shift: int = 0):
  """Shuffled full batches (each image randomly shifted by up to `shift` pixels); the
  remainder (97 images) changes from epoch to epoch."""
  order = rng.permutation(len(x))
  for i in range(len(x) // BATCH):
    idx = order[i * BATCH : (i + 1) * BATCH]
    xb = shifted(x[idx], shift, rng)
    yield {"x": jnp.asarray(xb), "mask": jnp.ones((BATCH,), jnp.float32)}


def whole_set(x: np.ndarray) -> dict:
  return {"x": jnp.asarray(x), "mask": jnp.ones((len(x),), jnp.float32)}


def optimizer(config, params, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam with the paper's decay; the GMM gets `gmm_lr_scale` times the network's rate."""

  def adam(scale):
    return optax.adam(
      optax.exponential_decay(config.train.lr * scale, 10 * steps_per_epoch, 0.9, staircase=True)
    )

  return optax.multi_transform(
    {"net": adam(1.0), "gmm": adam(config.model.gmm_lr_scale)}, vade.param_labels(params)
  )


def make_step(model, tx, objective, config):
  """A jitted `(state, batch) -> (state, loss)` for one stage's objective."""

  def step(state, batch):
    rngs = train.step_rngs(state.rng, state.step)

    def loss_fn(params):
      outputs, model_state = model.apply(
        {"params": params, **state.model_state},
        batch,
        train=True,
        rngs=rngs,
        mutable=list(state.model_state),
      )
      loss, _ = objective(outputs, batch, kl_weight=1.0, config=config)
      return loss, model_state

    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      model_state=model_state,
      opt_state=opt_state,
    ), loss

  return jax.jit(step)


def scores(model, state, x, y) -> dict:
  """Accuracy, NMI, ... of VaDE's own clusters (and the "assignments" themselves)."""
  outputs = model.apply(
    {"params": state.params, **state.model_state},
    whole_set(x),
    train=False,
    rngs=train.step_rngs(state.rng, jnp.int32(-1)),
  )
  # The silhouette is measured on the pixels: one space for every run, so that restarts with
  # different latents can be compared by it (labels are never used to choose).
  pixels = x.reshape(len(x), -1)
  assignments = np.asarray(outputs["assignments"])
  return analysis.cluster_metrics(y, assignments, pixels) | {"assignments": assignments}


def run_stage(model, state, step_fn, x, epochs, rng, log_every=0, report=None, shift=0):
  for epoch in range(epochs):
    losses = []
    for batch in epoch_batches(x, rng, shift):
      state, loss = step_fn(state, batch)
      losses.append(loss)
    if log_every and (epoch + 1) % log_every == 0:
      extra = report(state) if report else ""
      print(
        f"  epoch {epoch + 1:4d}: loss {float(np.mean(jax.device_get(losses))):9.3f}{extra}",
        flush=True,
      )
  return state


def other_clusters(means: np.ndarray, k: int, seed: int, method: str) -> np.ndarray:
  """The clusters that `method` finds in the standardized latent means: 'ward'
  (agglomerative), 'spectral' (10-nearest-neighbour graph), 'full' (a full-covariance
  GaussianMixture, best of 10) or 'tsne' (that mixture on a 2-D t-SNE of the means: N2D's
  clustering of the autoencoder's local manifold, with t-SNE for UMAP). No label is used.
  Their moments (`mixture_from_clusters`) are alternatives to the library's starts
  (BUILD_NOTES.md, sessions 9 and 10)."""
  from sklearn.cluster import AgglomerativeClustering
  from sklearn.cluster import SpectralClustering
  from sklearn.mixture import GaussianMixture

  center, scale = vade_variant.standardization(means)
  z = (means - center) / scale
  if method == "ward":
    return AgglomerativeClustering(k).fit_predict(z)
  if method == "spectral":
    spectral = SpectralClustering(
      k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed, n_init=10
    )
    return spectral.fit_predict(z)
  if method == "tsne":
    from sklearn.manifold import TSNE

    z = TSNE(2, init="pca", random_state=seed).fit_transform(z)
  return GaussianMixture(k, covariance_type="full", n_init=10, random_state=seed).fit(z).predict(z)


def elbo_loss(model, state, x, config) -> float:
  """The joint objective (negative ELBO, KL weight 1) over the whole set, in eval mode: the
  label-free score that picks among restarts."""
  outputs = model.apply(
    {"params": state.params, **state.model_state},
    whole_set(x),
    train=False,
    rngs=train.step_rngs(state.rng, jnp.int32(-1)),
  )
  loss, _ = vade_variant.objective(outputs, whole_set(x), kl_weight=1.0, config=config)
  return float(loss)


def train_once(args, config, x, y, seed: int) -> dict:
  """Pretraining -> GMM init -> joint training from `seed`; scores at both ends and the
  final negative ELBO."""
  rng = np.random.default_rng(seed)
  spe = len(x) // BATCH
  model = vade.build_vade(config.model, DataSpec(x.shape[1:]))
  variables = dict(train.init_variables(model, whole_set(x[:BATCH]), jax.random.PRNGKey(seed)))
  params = variables.pop("params")
  tx = optimizer(config, params, spe)
  state = train.TrainState(
    step=jnp.int32(0),
    params=params,
    model_state=variables,
    opt_state=tx.init(params),
    rng=jax.random.PRNGKey(seed + 1),
  )
  t0 = time.time()
  pretrain = make_step(model, tx, vade_variant.pretrain_objective, config)
  state = run_stage(
    model, state, pretrain, x, args.pretrain_epochs, rng, args.log_every, shift=args.shift
  )
  if args.start in ("gmm", "tsne_inputs"):  # the library's starts, as the trainer runs them
    start, labels = vade_variant.initial_mixture(state, model, lambda: iter([whole_set(x)]), config)
  else:
    means = vade_variant.encode_means(state, model, lambda: iter([whole_set(x)]))
    labels = other_clusters(means, 10, seed, args.start)
    start = vade_variant.mixture_from_clusters(means, labels, 10)
  state = vade_variant.with_gmm(state, start)
  if labels is not None:
    clusters = analysis.cluster_metrics(y, labels)
    print(f"the start's own clusters: acc {clusters['acc']:.4f}  nmi {clusters['nmi']:.4f}")
  out = {"ae_gmm": scores(model, state, x, y)}
  t1 = time.time()
  # A fresh optimizer for the joint stage, as in the paper's code (a new Keras model).
  state = state.replace(opt_state=tx.init(state.params))
  joint = make_step(model, tx, vade_variant.objective, config)
  report = lambda s: "  acc {acc:.4f}  nmi {nmi:.4f}".format(**scores(model, s, x, y))
  state = run_stage(
    model,
    state,
    joint,
    x,
    args.epochs,
    rng,
    args.log_every,
    report,
    args.shift if args.shift_joint else 0,
  )
  out["vade"] = scores(model, state, x, y)
  out["loss"] = elbo_loss(model, state, x, config)
  out["seconds"] = (t1 - t0, time.time() - t1)
  return out


def main(argv=None) -> dict[str, float]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=int, default=100, help="joint VaDE epochs")
  p.add_argument("--pretrain-epochs", type=int, default=50, help="autoencoder epochs")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--lr", type=float, default=2e-3)
  p.add_argument("--gmm-lr-scale", type=float, default=1.0)
  p.add_argument("--hidden", type=int, nargs="+", default=[500, 500, 2000])
  p.add_argument("--latent-dim", type=int, default=10)
  p.add_argument("--dropout", type=float, default=0.0, help="hidden-layer dropout (model.dropout)")
  p.add_argument(
    "--pretrain-noise",
    type=float,
    default=0.0,
    help="denoising pretraining: the fraction of each input zeroed (model.pretrain_noise)",
  )
  p.add_argument(
    "--shift",
    type=int,
    default=0,
    help="pretraining augmentation: random shifts of up to this many pixels (DEC-DA)",
  )
  p.add_argument(
    "--shift-joint", action="store_true", help="shift in the joint stage too (DEC-DA does)"
  )
  p.add_argument(
    "--select",
    choices=("elbo", "silhouette", "agreement"),
    default="elbo",
    help="how --restarts picks a run: the lowest negative ELBO, the highest silhouette of "
    "its clusters on the pixels (the same space for every run), or the clusters the other "
    "restarts agree with most (mean NMI between partitions: labels are never used)",
  )
  p.add_argument(
    "--start",
    choices=("gmm", "tsne_inputs", "ward", "spectral", "full", "tsne"),
    default="gmm",
    help="the mixture's start: the library's (model.gmm_start) diagonal GMM on the latent "
    "means (best of 10) or the clusters of a t-SNE of the pixels; or each cluster's moments "
    "from Ward's clustering, spectral clustering, a full-covariance GMM, or that GMM on a 2-D "
    "t-SNE of the latent means",
  )
  p.add_argument("--log-every", type=int, default=25)
  p.add_argument(
    "--restarts",
    type=int,
    default=1,
    help="train this many times from different initializations and keep the run with the "
    "one --select prefers (labels are never used to choose)",
  )
  args = p.parse_args(argv)
  if args.shift < 0:
    p.error(f"--shift is {args.shift}; expected a number of pixels >= 0")
  if args.select == "agreement" and args.restarts < 2:
    p.error("--select agreement compares restarts: expected --restarts 2 or more")
  config = make_config(args)
  x, y = load()

  raw = KMeans(10, n_init=10, random_state=args.seed).fit_predict(x.reshape(len(x), -1))
  results = {"kmeans_pixels": analysis.cluster_metrics(y, raw)}
  # Restart 0 is the single run of `--seed` (as without --restarts); the others are new seeds.
  runs = [train_once(args, config, x, y, args.seed + 1000 * r) for r in range(args.restarts)]
  for r, run in enumerate(runs):
    if args.restarts > 1:
      print(
        f"restart {r}: -ELBO {run['loss']:.3f}  silhouette {run['vade']['silhouette']:.4f}  "
        f"AE+GMM acc {run['ae_gmm']['acc']:.4f}  VaDE acc {run['vade']['acc']:.4f}"
      )
  if args.select == "elbo":
    best = min(runs, key=lambda run: run["loss"])
  elif args.select == "silhouette":
    best = max(runs, key=lambda run: run["vade"]["silhouette"])
  else:  # the partition the other restarts agree with most (mean NMI to each of them)
    agree = [
      np.mean([nmi(a["vade"]["assignments"], b["vade"]["assignments"]) for b in runs if b is not a])
      for a in runs
    ]
    for r, value in enumerate(agree):
      print(f"restart {r}: mean NMI to the other restarts {value:.4f}")
    best = runs[int(np.argmax(agree))]
  results |= {"ae_gmm": best["ae_gmm"], "vade": best["vade"]}

  for name, label in (
    ("kmeans_pixels", "k-means on pixels"),
    ("ae_gmm", f"pretrained AE + GMM ({args.pretrain_epochs} epochs)"),
    ("vade", f"VaDE ({args.epochs} joint epochs)"),
  ):
    r = results[name]
    print(f"{label:40s} acc {r['acc']:.4f}  nmi {r['nmi']:.4f}")
  pre, joint = best["seconds"]
  print(f"seed {args.seed}; pretrain {pre:.0f} s, joint {joint:.0f} s per restart")
  return results


if __name__ == "__main__":
  main()

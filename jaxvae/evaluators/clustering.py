"""Clustering metrics, latent-space evaluation and plots for the eval / analyze modes.

Everything here runs on the host with numpy, scikit-learn, scipy and matplotlib; nothing needs
JAX, so arrays coming out of a model should be pulled to the host (`np.asarray`) first.

Labels follow the batch convention of docs/ARCHITECTURE.md: one int array per label column,
holding an index into `label_names[column]`, or -1 when the value is unknown.

Plots use matplotlib's object-oriented API with an explicit Agg canvas, so importing this module
never changes the global backend of a caller that has its own (e.g. a notebook).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skmetrics
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from jaxvae import workdir as workdir_lib

log = logging.getLogger(__name__)

UNKNOWN = -1
METRIC_KEYS = ("nmi", "ari", "purity", "acc", "silhouette")
# Silhouette is O(N^2) in time and memory; above this many points it is estimated on a sample.
SILHOUETTE_MAX_POINTS = 5000


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _flatten(x: Any) -> np.ndarray:
  """[N, ...] -> float [N, D]; models hand over latents of any rank."""
  x = np.asarray(x)
  if x.ndim == 0:
    raise ValueError("expected an array with a leading example axis, got a scalar")
  return x.reshape(x.shape[0], -1)


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> np.ndarray:
  """Counts [n_classes, n_clusters]; class and cluster ids may be any ints (relabelled densely)."""
  _, t = np.unique(labels_true, return_inverse=True)
  _, p = np.unique(labels_pred, return_inverse=True)
  table = np.zeros((t.max(initial=-1) + 1, p.max(initial=-1) + 1), dtype=np.int64)
  np.add.at(table, (t.ravel(), p.ravel()), 1)
  return table


def purity(table: np.ndarray) -> float:
  """Fraction of points whose cluster's majority class is their class."""
  return float(table.max(axis=0).sum() / table.sum())


def hungarian_accuracy(table: np.ndarray) -> float:
  """Best one-to-one cluster->class accuracy (unsupervised ACC).

  `linear_sum_assignment` accepts a rectangular table, so with more clusters than classes
  the surplus clusters stay unmatched and their points count as errors (unlike purity,
  which rewards over-clustering).
  """
  rows, cols = linear_sum_assignment(table, maximize=True)
  return float(table[rows, cols].sum() / table.sum())


def _silhouette(features: np.ndarray | None, labels_pred: np.ndarray, seed: int) -> float:
  n_clusters = len(np.unique(labels_pred))
  # sklearn requires 2 <= n_clusters <= n_samples - 1.
  if features is None or n_clusters < 2 or n_clusters >= len(labels_pred):
    return float("nan")
  sample = SILHOUETTE_MAX_POINTS if len(labels_pred) > SILHOUETTE_MAX_POINTS else None
  return float(skmetrics.silhouette_score(
      features, labels_pred, sample_size=sample, random_state=seed))


def cluster_metrics(labels_true: np.ndarray, labels_pred: np.ndarray,
                    features: np.ndarray | None = None, *, seed: int = 0) -> dict[str, float]:
  """Scores a clustering against ground-truth labels.

  Args:
    labels_true: int [N], -1 for unknown; those points are excluded from every score.
    labels_pred: int [N] cluster ids (any ints; they need not match the class ids).
    features: optional [N, ...] features for the silhouette of the predicted clusters.
    seed: only used to subsample the silhouette when N is large.

  Returns:
    {"nmi", "ari", "purity", "acc", "silhouette"}: floats; all NaN when no label is known,
    silhouette NaN when there are fewer than 2 clusters or no features.
  """
  labels_true = np.asarray(labels_true).ravel()
  labels_pred = np.asarray(labels_pred).ravel()
  if labels_true.shape != labels_pred.shape:
    raise ValueError(f"labels_true has {labels_true.size} entries but labels_pred has "
                     f"{labels_pred.size}")
  known = labels_true != UNKNOWN
  if not known.any():
    return {k: float("nan") for k in METRIC_KEYS}
  t, p = labels_true[known], labels_pred[known]
  table = contingency(t, p)
  feats = None
  if features is not None:
    feats = _flatten(features)
    if feats.shape[0] != labels_true.size:
      raise ValueError(f"features has {feats.shape[0]} rows but there are "
                       f"{labels_true.size} labels")
    feats = feats[known]
  return {
      "nmi": float(skmetrics.normalized_mutual_info_score(t, p)),
      "ari": float(skmetrics.adjusted_rand_score(t, p)),
      "purity": purity(table),
      "acc": hungarian_accuracy(table),
      "silhouette": _silhouette(feats, p, seed),
  }


# ----------------------------------------------------------------------------------------------
# Clustering and evaluation of a latent space
# ----------------------------------------------------------------------------------------------


def cluster_latents(latents: np.ndarray, n_clusters: int, *, method: str = "kmeans",
                    seed: int = 0) -> np.ndarray:
  """Clusters [N, ...] latents into `n_clusters`; returns int [N] cluster ids.

  method: "kmeans" (10 restarts) or "gmm" (diagonal covariances, the same family as a
  VaDE prior, so its score is the fair comparison for VaDE's own assignments).
  """
  x = _flatten(latents).astype(np.float64)
  if not 1 <= n_clusters <= x.shape[0]:
    raise ValueError(f"n_clusters must be in [1, {x.shape[0]}] (the number of points), "
                     f"got {n_clusters}")
  if method == "kmeans":
    model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
  elif method == "gmm":
    model = GaussianMixture(n_components=n_clusters, covariance_type="diag", random_state=seed)
  else:
    raise ValueError(f"method must be 'kmeans' or 'gmm', got {method!r}")
  return model.fit_predict(x).astype(np.int64)


def _label_columns(labels: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
  columns = {}
  for name, values in labels.items():
    values = np.asarray(values).ravel()
    if values.size != n:
      raise ValueError(f"label {name!r} has {values.size} entries but there are {n} latents")
    columns[name] = values
  return columns


def _check_label_range(name: str, y: np.ndarray, names: Sequence[str] | None) -> None:
  """Raises on label ids that cannot index `names`: they mean labels and names are out of sync."""
  bad = (y < UNKNOWN) | ((y >= len(names)) if names is not None else False)
  if np.any(bad):
    size = "?" if names is None else len(names)
    raise ValueError(f"label {name!r} has ids {sorted(set(y[bad].tolist()))[:5]} outside "
                     f"[-1, {size}) (its label_names has {size} values)")


def evaluate_latents(latents: np.ndarray, labels: Mapping[str, np.ndarray],
                     label_names: Mapping[str, Sequence[str]], *, seed: int = 0,
                     assignments: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
  """Clusters the latents once per label column and scores the clusters against it.

  k is the number of distinct known values of the column in these data (a split may lack
  some of the values in `label_names`). Clustering uses every point, known or not, since an
  unsupervised model sees them all; only the scoring drops unknown labels.

  Returns:
    {label: {"nmi", "ari", "purity", "acc", "silhouette" (k-means), "k", "n" (points with a
    known label), "gmm": {metrics}, "own": {metrics} when `assignments` is given}} for every
    column with at least 2 known values; other columns are skipped with a log line.
  """
  x = _flatten(latents)
  columns = _label_columns(labels, x.shape[0])
  own = None if assignments is None else np.asarray(assignments).ravel()
  if own is not None and own.size != x.shape[0]:
    raise ValueError(f"assignments has {own.size} entries but there are {x.shape[0]} latents")
  cache: dict[tuple[str, int], np.ndarray] = {}  # columns with equal k share a clustering

  def clusters(method: str, k: int) -> np.ndarray:
    if (method, k) not in cache:
      cache[method, k] = cluster_latents(x, k, method=method, seed=seed)
    return cache[method, k]

  results = {}
  for name, y in columns.items():
    _check_label_range(name, y, label_names.get(name))
    k = len(np.unique(y[y != UNKNOWN]))
    if k < 2:
      log.info("evaluate_latents: skipping label %r: %d known value(s), need >= 2", name, k)
      continue
    result: dict[str, Any] = cluster_metrics(y, clusters("kmeans", k), x, seed=seed)
    result.update(k=k, n=int((y != UNKNOWN).sum()))
    result["gmm"] = cluster_metrics(y, clusters("gmm", k), x, seed=seed)
    if own is not None:
      result["own"] = cluster_metrics(y, own, x, seed=seed)
    results[name] = result
  return results


def pca_kmeans_baseline(features: np.ndarray, labels: Mapping[str, np.ndarray],
                        label_names: Mapping[str, Sequence[str]], n_components: int = 32,
                        seed: int = 0) -> dict[str, dict[str, Any]]:
  """The no-VAE baseline: standardize the flattened features, PCA, then `evaluate_latents`.

  A VAE's latents are worth having for clustering only if they beat this.
  """
  x = _flatten(features).astype(np.float32)
  n, d = x.shape
  if n < 2:
    raise ValueError(f"pca_kmeans_baseline needs at least 2 examples, got {n}")
  dims = min(n_components, n - 1, d)
  z = StandardScaler(copy=False).fit_transform(x)  # x is already our own copy; 30 s clips are big
  z = PCA(n_components=dims, random_state=seed).fit_transform(z)
  return evaluate_latents(z, labels, label_names, seed=seed)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)  # attaches itself as fig.canvas
  return fig


def figure_to_array(fig: Figure) -> np.ndarray:
  """Renders a figure to uint8 [H, W, 3] RGB, for tensorboardX `add_image(dataformats="HWC")`."""
  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)  # a pyplot figure under a non-Agg backend cannot hand out its pixels
  fig.canvas.draw()
  return np.array(fig.canvas.buffer_rgba(), dtype=np.uint8)[..., :3]


def _finish(fig: Figure, path: str | os.PathLike | None, return_array: bool):
  """Saves and/or renders a figure, then drops it; returns the path or the RGB array."""
  try:
    if path is not None:
      path = os.fspath(path)
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      with workdir_lib.atomic_path(path) as tmp:  # a kill never leaves half a PNG
        fig.savefig(tmp)
    if return_array:
      return figure_to_array(fig)
    if path is None:
      raise ValueError("give a path, or return_array=True, or both")
    return path
  finally:
    fig.clear()  # the figure is not registered with pyplot, so this frees it


def _embed_2d(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
  """[N, D] -> ([N, 2], the method actually used)."""
  n, d = x.shape
  if d > 50 and n > 2:  # PCA first: t-SNE / UMAP neighbours are cheaper and less noisy in 50-d
    x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
  if method == "umap":
    try:
      import umap  # pylint: disable=import-outside-toplevel
    except ImportError:
      log.warning("plot_embedding_2d: umap-learn is not installed (pip install umap-learn); "
                  "using t-SNE instead")
      method = "tsne"
    else:
      reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed)
      return reducer.fit_transform(x), "umap"
  if method != "tsne":
    raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
  # t-SNE needs perplexity < N; for small N keep it under N/3 so neighbourhoods stay local.
  perplexity = min(30.0, max(1.0, (n - 1) / 3.0))
  tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
              random_state=seed)
  return tsne.fit_transform(x), "tsne"


def _label_text(names: Sequence[str], index: int) -> str:
  if index == UNKNOWN:
    return "unknown"
  return str(names[index]) if 0 <= index < len(names) else str(index)


def _scatter_by_label(ax, xy: np.ndarray, y: np.ndarray | None, names: Sequence[str],
                      title: str) -> None:
  ax.set_title(title)
  ax.set_xticks([])
  ax.set_yticks([])
  if y is None:
    ax.scatter(xy[:, 0], xy[:, 1], s=8)
    return
  values = np.unique(y)
  # Colour by class id, not by rank among the values present, so a class keeps its colour
  # across panels, splits and runs.
  cmap = _colormap(max(len(names), int(values.max()) + 1))
  for v in values:
    sel = y == v
    # Unknowns are drawn grey and underneath so they do not hide the labelled points.
    color = (0.7, 0.7, 0.7) if v == UNKNOWN else cmap(int(v) % cmap.N)
    ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=color, label=_label_text(names, int(v)),
               zorder=1 if v == UNKNOWN else 2)
  ax.legend(fontsize="x-small", markerscale=1.5, loc="upper left", bbox_to_anchor=(1.0, 1.0),
            ncol=1 + len(values) // 25, frameon=False)


def _colormap(n: int):
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  if n <= 10:
    return colormaps["tab10"]
  if n <= 20:
    return colormaps["tab20"]
  return colormaps["turbo"].resampled(n)


def plot_embedding_2d(latents: np.ndarray, labels: Mapping[str, np.ndarray],
                      label_names: Mapping[str, Sequence[str]], path: str | None, *,
                      method: str = "tsne", seed: int = 0, title: str | None = None,
                      return_array: bool = False):
  """2-D t-SNE or UMAP of the latents, one panel per label column coloured by its values.

  UMAP falls back to t-SNE (with a warning) when umap-learn is missing. With no label
  columns a single uncoloured panel is drawn. Returns `path`, or the RGB array when
  `return_array` (then `path` may be None to skip the file).
  """
  x = _flatten(latents).astype(np.float32)
  if x.shape[0] < 2:
    raise ValueError(f"plot_embedding_2d needs at least 2 points, got {x.shape[0]}")
  columns = _label_columns(labels, x.shape[0])
  xy, used = _embed_2d(x, method, seed)
  panels = list(columns.items()) or [("", None)]
  fig = _new_figure(5.5 * len(panels), 4.5)
  for i, (name, y) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    _scatter_by_label(ax, xy, y, label_names.get(name, ()), name or "latents")
  fig.suptitle(title or f"latents ({used}, N={x.shape[0]})")
  fig.tight_layout()
  return _finish(fig, path, return_array)


def _metric_series(history: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, tuple]]:
  """{metric: {split: (xs, ys)}} from rows like {"epoch": 1, "train/loss": .., "val/loss": ..}."""
  xkey = next((k for k in ("epoch", "step") if any(k in row for row in history)), None)
  series: dict[str, dict[str, tuple[list, list]]] = {}
  for i, row in enumerate(history):
    x = row.get(xkey, i) if xkey else i
    for key, value in row.items():
      if key in ("epoch", "step"):
        continue
      try:
        value = float(value)
      except (TypeError, ValueError):
        continue  # strings, arrays with more than one value: not a curve
      split, _, metric = key.rpartition("/")
      xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
      xs.append(x)
      ys.append(value)
  return series


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | None,
                         keys: Sequence[str] | None = None, *, return_array: bool = False):
  """One subplot per metric name, its train / val / ... curves on the same axes.

  `keys` picks metrics by name ("loss", or "train/loss" meaning "loss"); requested keys that
  never occur are logged and skipped, and rows that lack a metric are simply not plotted.
  """
  series = _metric_series(history)
  names = sorted(series) if keys is None else list(dict.fromkeys(
      k.rpartition("/")[2] for k in keys))
  missing = [k for k in names if k not in series]
  if missing:
    log.warning("plot_training_curves: no values for %s in the history", missing)
  names = [k for k in names if k in series]
  cols = min(3, max(1, len(names)))
  rows = max(1, -(-len(names) // cols))
  fig = _new_figure(4.5 * cols, 3.2 * rows)
  if not names:
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
    ax.set_axis_off()
  for i, name in enumerate(names):
    ax = fig.add_subplot(rows, cols, i + 1)
    for split, (xs, ys) in sorted(series[name].items()):
      ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=split or name)
    ax.set_title(name)
    ax.set_xlabel("epoch" if any("epoch" in r for r in history) else "step")
    ax.legend(fontsize="small")
  fig.tight_layout()
  return _finish(fig, path, return_array)


def _as_images(specs: Any, what: str) -> np.ndarray:
  """[B, n_mels, frames] (a single [n_mels, frames] or a size-1 channel axis also accepted)."""
  a = np.asarray(specs, dtype=np.float32)
  if a.ndim == 2:
    a = a[None]
  if a.ndim == 4 and 1 in (a.shape[1], a.shape[-1]):
    a = a[:, 0] if a.shape[1] == 1 else a[..., 0]
  if a.ndim != 3:
    raise ValueError(f"{what}: expected [B, n_mels, frames], got shape {np.shape(specs)}")
  return a


def _show(ax, image: np.ndarray, title: str | None, vmin=None, vmax=None) -> None:
  ax.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
            interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize="small")


def plot_spectrogram_grid(originals: np.ndarray, recons: np.ndarray, path: str | None, *,
                          titles: Sequence[str] | None = None, max_items: int = 8,
                          return_array: bool = False):
  """Inputs on the top row, reconstructions below, at most `max_items` columns.

  Each column shares one colour scale so a reconstruction's level errors stay visible.
  """
  a, b = _as_images(originals, "originals"), _as_images(recons, "recons")
  if a.shape != b.shape:
    raise ValueError(f"originals {a.shape} and recons {b.shape} differ in shape")
  n = min(len(a), max_items)
  fig = _new_figure(2.2 * n + 0.6, 4.4)
  for j in range(n):
    lo, hi = float(min(a[j].min(), b[j].min())), float(max(a[j].max(), b[j].max()))
    top, bottom = fig.add_subplot(2, n, j + 1), fig.add_subplot(2, n, n + j + 1)
    _show(top, a[j], titles[j] if titles is not None and j < len(titles) else None, lo, hi)
    _show(bottom, b[j], None, lo, hi)
    if j == 0:
      top.set_ylabel("input")
      bottom.set_ylabel("reconstruction")
  fig.tight_layout()
  return _finish(fig, path, return_array)


def plot_spectrograms(specs: np.ndarray, path: str | None, titles: Sequence[str] | None = None,
                      *, max_items: int | None = None, return_array: bool = False):
  """One row of spectrograms (e.g. samples from the prior), each on its own colour scale."""
  a = _as_images(specs, "specs")
  n = len(a) if max_items is None else min(len(a), max_items)
  fig = _new_figure(2.2 * n + 0.4, 2.6)
  for j in range(n):
    _show(fig.add_subplot(1, n, j + 1), a[j],
          titles[j] if titles is not None and j < len(titles) else None)
  fig.tight_layout()
  return _finish(fig, path, return_array)


# ----------------------------------------------------------------------------------------------
# TensorBoard projector
# ----------------------------------------------------------------------------------------------


def _tsv_safe(text: str) -> str:
  return " ".join(str(text).split())  # tabs / newlines would break the metadata table


def write_projector(latents: np.ndarray, labels: Mapping[str, np.ndarray],
                    label_names: Mapping[str, Sequence[str]], logdir: str, *,
                    tag: str = "latents", global_step: int = 0) -> str:
  """Writes the latents and their labels for TensorBoard's projector; returns `logdir`.

  Metadata has one column per label column (value names, "unknown" for -1). The projector
  reads a one-column file as headerless, so a single column is written without a header.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  x = _flatten(latents).astype(np.float32)
  columns = _label_columns(labels, x.shape[0])
  rows = [[_tsv_safe(_label_text(label_names.get(name, ()), int(y[i])))
           for name, y in columns.items()] for i in range(x.shape[0])]
  header = [_tsv_safe(name) for name in columns]
  if len(header) == 0:
    metadata, header = None, None
  elif len(header) == 1:
    metadata, header = [r[0] for r in rows], None
  else:
    metadata = rows
  os.makedirs(logdir, exist_ok=True)
  writer = SummaryWriter(logdir)
  try:
    writer.add_embedding(x, metadata=metadata, global_step=global_step, tag=tag,
                         metadata_header=header)
  finally:
    writer.close()
  return logdir

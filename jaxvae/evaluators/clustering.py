"""Clustering metrics and latent-space evaluation for the eval mode (plots: `plots.py`).

Everything here runs on the host with numpy, scikit-learn and scipy; nothing needs
JAX, so arrays coming out of a model should be pulled to the host (`np.asarray`) first.

Labels follow the batch convention of docs/ARCHITECTURE.md: one int array per label column,
holding an index into `label_names[column]`, or -1 when the value is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
# scikit-learn and scipy (about 1.3 s to import) are imported inside the functions that use
# them: every jaxvae process imports this module (main imports every mode), few use them.

UNKNOWN = -1
METRIC_KEYS = ("nmi", "ari", "purity", "acc", "silhouette")
# Silhouette is O(N^2) in time and memory; above this many points it is estimated on a sample.
SILHOUETTE_MAX_POINTS = 5000


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def flatten(x: Any) -> np.ndarray:
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
  from scipy.optimize import linear_sum_assignment

  rows, cols = linear_sum_assignment(table, maximize=True)
  return float(table[rows, cols].sum() / table.sum())


def _silhouette(features: np.ndarray | None, labels_pred: np.ndarray, seed: int) -> float:
  from sklearn import metrics as skmetrics

  n_clusters = len(np.unique(labels_pred))
  # sklearn requires 2 <= n_clusters <= n_samples - 1.
  if features is None or n_clusters < 2 or n_clusters >= len(labels_pred):
    return float("nan")
  sample = SILHOUETTE_MAX_POINTS if len(labels_pred) > SILHOUETTE_MAX_POINTS else None
  return float(
    skmetrics.silhouette_score(features, labels_pred, sample_size=sample, random_state=seed)
  )


def cluster_metrics(
  labels_true: np.ndarray,
  labels_pred: np.ndarray,
  features: np.ndarray | None = None,
  *,
  seed: int = 0,
) -> dict[str, float]:
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
  from sklearn import metrics as skmetrics

  labels_true = np.asarray(labels_true).ravel()
  labels_pred = np.asarray(labels_pred).ravel()
  if labels_true.shape != labels_pred.shape:
    raise ValueError(
      f"labels_true has {labels_true.size} entries but labels_pred has {labels_pred.size}"
    )
  known = labels_true != UNKNOWN
  if not known.any():
    return {k: float("nan") for k in METRIC_KEYS}
  t, p = labels_true[known], labels_pred[known]
  table = contingency(t, p)
  feats = None
  if features is not None:
    feats = flatten(features)
    if feats.shape[0] != labels_true.size:
      raise ValueError(
        f"features has {feats.shape[0]} rows but there are {labels_true.size} labels"
      )
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


RESTARTS = 10  # k-means and GMM restarts per clustering


def cluster_latents(
  latents: np.ndarray, n_clusters: int, *, method: str = "kmeans", seed: int = 0
) -> np.ndarray:
  """Clusters [N, ...] latents into `n_clusters`; returns int [N] cluster ids.

  method: "kmeans" or "gmm" (diagonal covariances, the same family as a VaDE prior, so its
  score is the fair comparison for VaDE's own assignments), each with RESTARTS restarts
  from k-means++ seeds, the one kept chosen by the clustering's own objective (inertia, or
  likelihood), never by a label.
  """
  from sklearn.cluster import KMeans
  from sklearn.mixture import GaussianMixture

  x = flatten(latents).astype(np.float64)
  if not 1 <= n_clusters <= x.shape[0]:
    raise ValueError(
      f"n_clusters must be in [1, {x.shape[0]}] (the number of points), got {n_clusters}"
    )
  if method == "kmeans":
    model = KMeans(n_clusters=n_clusters, n_init=RESTARTS, random_state=seed)
  elif method == "gmm":
    model = GaussianMixture(
      n_components=n_clusters,
      covariance_type="diag",
      n_init=RESTARTS,
      init_params="k-means++",
      random_state=seed,
    )
  else:
    raise ValueError(f"method must be 'kmeans' or 'gmm', got {method!r}")
  return model.fit_predict(x).astype(np.int64)


def label_columns(labels: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
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
    raise ValueError(
      f"label {name!r} has ids {sorted(set(y[bad].tolist()))[:5]} outside "
      f"[-1, {size}) (its label_names has {size} values)"
    )


def identifier_columns(labels: Mapping[str, np.ndarray]) -> dict[str, str]:
  """The label columns that identify clips rather than group them (an id, a title): more
  than half the clips with a value have a value of their own. Clustering k > n / 2 groups
  says nothing, so these are skipped, each with the reason returned here."""
  out = {}
  for name, values in labels.items():
    y = np.asarray(values).ravel()
    known = y[y != UNKNOWN]
    k = len(np.unique(known))
    if len(known) >= 4 and k > len(known) / 2:
      out[name] = (
        f"{k} distinct values for {len(known)} clips: an identifier column, not a label to "
        "cluster by"
      )
  return out


def cluster_space(
  latents: np.ndarray, space: str, threshold: float, active: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
  """The points eval clusters, [N, D'], and what they are.

  'standardized': the latent dimensions whose values vary over the points by more than
  `threshold` (the active units), each centred and scaled to unit variance. k-means weighs
  every dimension by its spread, and a VAE's spreads say how much each dimension carries of
  the reconstruction, not of the labels; the PCA baseline standardizes its features the same
  way. Inactive dimensions are dropped: scaled up they would be pure noise. 'raw': the points
  as they are. With no active dimension, the points are clustered as they are, and the
  returned description says so. `active`: the active units when the caller has counted them
  already (eval's `latent_usage`), so that both name the same dimensions.
  """
  x = flatten(latents).astype(np.float64)
  if space not in ("standardized", "raw"):
    raise ValueError(f"space must be 'standardized' or 'raw', got {space!r}")
  var = x.var(axis=0)
  active = var > threshold if active is None else np.asarray(active, bool)
  if space == "raw" or not active.any():
    info = {"space": "raw", "dims": int(x.shape[1])}
    if space != "raw":
      info["note"] = f"no dimension varies by more than {threshold}: clustered as they are"
    return x, info
  z = (x[:, active] - x[:, active].mean(axis=0)) / np.sqrt(var[active])
  info = {"space": "standardized", "dims": int(active.sum()), "of": int(x.shape[1])}
  return z, info | {"threshold": threshold}


def linear_probe(
  points: np.ndarray,
  labels_true: np.ndarray,
  *,
  groups: np.ndarray | None = None,
  seed: int = 0,
  folds: int = 5,
) -> dict[str, Any] | None:
  """How well a label reads off the points linearly: the cross-validated accuracy of a
  multinomial logistic regression, as the multimodal VAE papers (MVAE, MMVAE, MoPoE-VAE)
  judge whether a joint latent keeps each attribute. Clustering asks whether the label is
  the *dominant* structure; this asks whether it is *there*.

  groups: one id per point (the clip of a segment): a group's points stay in one fold, so
  the probe cannot score by recognizing a clip it was trained on. Classes with fewer known
  groups than 2 are left out and counted; the folds are `folds`, or fewer when the smallest
  class has fewer groups.

  Returns {"acc", "chance" (the majority class's share), "folds", "n", "dropped_classes",
  "dropped_points"}, or None when fewer than 2 classes have 2 groups.
  """
  from sklearn.linear_model import LogisticRegression
  from sklearn.model_selection import StratifiedGroupKFold
  from sklearn.model_selection import cross_val_score
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  y = np.asarray(labels_true).ravel()
  g = np.arange(len(y)) if groups is None else np.asarray(groups).ravel()
  known = y != UNKNOWN
  x, y, g = flatten(points)[known], y[known], g[known]
  classes = np.unique(y)
  per_class = np.array([len(np.unique(g[y == c])) for c in classes])
  keep = np.isin(y, classes[per_class >= 2])
  if len(classes[per_class >= 2]) < 2:
    return None
  x, y, g = x[keep], y[keep], g[keep]
  counts = np.unique(y, return_counts=True)[1]
  folds = min(folds, int(per_class[per_class >= 2].min()))
  probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
  split = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
  acc = cross_val_score(probe, x, y, groups=g, cv=split, scoring="accuracy")
  return {
    "acc": float(acc.mean()),
    "chance": float(counts.max() / counts.sum()),
    "folds": folds,
    "n": int(len(y)),
    "dropped_classes": int((per_class < 2).sum()),
    "dropped_points": int((~keep).sum()),
  }


def evaluate_latents(
  latents: np.ndarray,
  labels: Mapping[str, np.ndarray],
  label_names: Mapping[str, Sequence[str]],
  *,
  seed: int = 0,
  assignments: np.ndarray | None = None,
  groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
  """Clusters the latents once per label column and scores the clusters against it.

  k is the number of distinct known values of the column in these data (a split may lack
  some of the values in `label_names`). Clustering uses every point, known or not, since an
  unsupervised model sees them all; only the scoring drops unknown labels.

  Returns:
    {label: {"nmi", "ari", "purity", "acc", "silhouette" (k-means), "k", "n" (points with a
    known label), "gmm": {metrics}, "linear_probe": `linear_probe` (grouped by `groups`, one
    id per point, e.g. its clip; absent when fewer than 2 classes have 2 groups), "own":
    {metrics} when `assignments` is given}} for every column with at least 2 known values;
    other columns are skipped with a log line.
  """
  x = flatten(latents)
  columns = label_columns(labels, x.shape[0])
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
    probe = linear_probe(x, y, groups=groups, seed=seed)
    if probe is not None:
      result["linear_probe"] = probe
    if own is not None:
      result["own"] = cluster_metrics(y, own, x, seed=seed)
    results[name] = result
  return results


def evaluate_parts(
  latents: np.ndarray,
  parts: Mapping[str, tuple[int, int]],
  labels: Mapping[str, np.ndarray],
  label_names: Mapping[str, Sequence[str]],
  *,
  space: str,
  threshold: float,
  active: np.ndarray | None = None,
  seed: int = 0,
  groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
  """`evaluate_latents` on each part of the latent alone: parts = {name: (start, stop)}, the
  dimensions one input alone infers (a multimodal model's audio and lyrics subspaces).

  k-means on a whole latent finds its dominant label only: with two clean labels of 3 and
  4 groups it picks the 3 only when their spread exceeds 2/3 of the 4's, and the 4 only
  when theirs exceeds 9/8 of the 3's, so one clustering of the whole seldom shows both.
  Each part clustered in `space` (`cluster_space`; `active` restricted to the part) says
  what that part organizes.

  Returns {part: {"dims": [start, stop], "cluster_space": its description, <label>:
  metrics}}.
  """
  x = flatten(latents)
  out = {}
  for part, (start, stop) in parts.items():
    if not 0 <= start < stop <= x.shape[1]:
      raise ValueError(
        f"latent part {part!r} is dimensions [{start}, {stop}); the latent has {x.shape[1]}"
      )
    points, info = cluster_space(
      x[:, start:stop], space, threshold, None if active is None else active[start:stop]
    )
    scores = evaluate_latents(points, labels, label_names, seed=seed, groups=groups)
    out[part] = {"dims": [start, stop], "cluster_space": info} | scores
  return out


def pca_kmeans_baseline(
  features: np.ndarray,
  labels: Mapping[str, np.ndarray],
  label_names: Mapping[str, Sequence[str]],
  n_components: int = 32,
  seed: int = 0,
  groups: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
  """The no-VAE baseline: standardize the flattened features, PCA, then `evaluate_latents`.

  A VAE's latents are worth having for clustering only if they beat this.
  """
  from sklearn.decomposition import PCA
  from sklearn.preprocessing import StandardScaler

  x = flatten(features).astype(np.float32)
  n, d = x.shape
  if n < 2:
    raise ValueError(f"pca_kmeans_baseline needs at least 2 examples, got {n}")
  dims = min(n_components, n - 1, d)
  z = StandardScaler(copy=False).fit_transform(x)  # x is already our own copy; 30 s clips are big
  z = PCA(n_components=dims, random_state=seed).fit_transform(z)
  return evaluate_latents(z, labels, label_names, seed=seed, groups=groups)

"""Tests for jaxvae.evaluators (clustering, plots) and the training-curve plot: metrics on
hand-checked cases, latent evaluation, plots, projector."""

from __future__ import annotations

import builtins
import logging
import os

import numpy as np
from PIL import Image
import pytest

from jaxvae.evaluators import clustering as analysis
from jaxvae.evaluators import plots
from jaxvae.training import figures
from jaxvae.training import writer

# ----------------------------------------------------------------------------------------------
# cluster_metrics
# ----------------------------------------------------------------------------------------------


def test_perfect_clustering_with_permuted_ids_scores_one():
  y = np.array([0, 0, 1, 1, 2, 2, 2])
  pred = np.array([5, 5, 3, 3, 9, 9, 9])  # same partition, arbitrary ids
  m = analysis.cluster_metrics(y, pred)
  for key in ("nmi", "ari", "purity", "acc"):
    assert m[key] == pytest.approx(1.0), key
  assert np.isnan(m["silhouette"])  # no features given


def test_hand_computed_purity_and_acc():
  # Contingency (classes x clusters):
  #   cluster:  A  B
  #   class 0:  3  1
  #   class 1:  2  0
  #   class 2:  0  2
  # purity = (3 + 2) / 8 (cluster majorities); ACC: 0->A (3) + 2->B (2) = 5/8.
  y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
  pred = np.array([0, 0, 0, 1, 0, 0, 1, 1])
  m = analysis.cluster_metrics(y, pred)
  assert m["purity"] == pytest.approx(5 / 8)
  assert m["acc"] == pytest.approx(5 / 8)
  # One cluster per point-pair: purity rewards it, ACC (one-to-one) does not.
  y2 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  pred2 = np.array([0, 0, 1, 1, 2, 2, 3, 3])
  m2 = analysis.cluster_metrics(y2, pred2)
  assert m2["purity"] == pytest.approx(1.0)
  assert m2["acc"] == pytest.approx(4 / 8)


def test_acc_differs_from_purity_when_two_clusters_share_a_majority_class():
  # Both clusters are majority class 0: purity counts both, ACC may match class 0 only once.
  y = np.array([0, 0, 0, 1, 0, 0, 0, 1, 1])
  pred = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
  m = analysis.cluster_metrics(y, pred)
  assert m["purity"] == pytest.approx((3 + 3) / 9)
  # best one-to-one: (0->class0: 3) + (1->class1: 2) = 5  vs  (0->1: 1) + (1->0: 3) = 4
  assert m["acc"] == pytest.approx(5 / 9)


def test_unknown_labels_are_excluded():
  y = np.array([0, 0, 1, 1, -1, -1, -1])
  pred = np.array([1, 1, 0, 0, 1, 0, 1])  # the unknowns would be wrong half the time
  m = analysis.cluster_metrics(y, pred)
  assert m["acc"] == pytest.approx(1.0)
  assert m["nmi"] == pytest.approx(1.0)
  all_unknown = analysis.cluster_metrics(-np.ones(4, int), np.arange(4))
  assert all(np.isnan(v) for v in all_unknown.values())


def test_more_clusters_than_classes_and_more_classes_than_clusters():
  y = np.array([0, 0, 0, 1, 1, 1])
  pred = np.array([0, 1, 2, 3, 4, 4])
  m = analysis.cluster_metrics(y, pred)
  assert m["purity"] == pytest.approx(1.0)
  assert m["acc"] == pytest.approx((1 + 2) / 6)  # one cluster per class
  m = analysis.cluster_metrics(pred, y)  # 5 classes, 2 clusters
  assert m["acc"] == pytest.approx((1 + 2) / 6)
  assert m["purity"] == pytest.approx((1 + 2) / 6)


def test_silhouette_uses_features_and_is_nan_for_one_cluster():
  rng = np.random.default_rng(0)
  feats = np.concatenate([rng.normal(0, 0.1, (20, 3)), rng.normal(10, 0.1, (20, 3))])
  y = np.repeat([0, 1], 20)
  assert analysis.cluster_metrics(y, y, feats)["silhouette"] > 0.9
  assert analysis.cluster_metrics(y, 1 - y, feats)["silhouette"] > 0.9  # ids don't matter
  shuffled = rng.permutation(y)
  assert analysis.cluster_metrics(y, shuffled, feats)["silhouette"] < 0.2
  assert np.isnan(analysis.cluster_metrics(y, np.zeros(40, int), feats)["silhouette"])


def test_shape_mismatch_is_an_error():
  with pytest.raises(ValueError, match="entries"):
    analysis.cluster_metrics(np.zeros(3, int), np.zeros(4, int))


# ----------------------------------------------------------------------------------------------
# cluster_latents / evaluate_latents / baseline
# ----------------------------------------------------------------------------------------------


def _blobs(n_per: int = 30, k: int = 3, dim: int = 8, spread: float = 0.3, seed: int = 0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(0, 10, (k, dim))
  y = np.repeat(np.arange(k), n_per)
  x = centers[y] + rng.normal(0, spread, (len(y), dim))
  order = rng.permutation(len(y))
  return x[order].astype(np.float32), y[order]


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_cluster_latents_recovers_blobs(method):
  x, y = _blobs()
  pred = analysis.cluster_latents(x.reshape(len(x), 2, 4), 3, method=method)  # any rank
  assert pred.shape == (len(x),) and pred.dtype.kind == "i"
  assert analysis.cluster_metrics(y, pred)["acc"] == pytest.approx(1.0)


def test_cluster_latents_rejects_bad_arguments():
  x, _ = _blobs()
  with pytest.raises(ValueError, match="method"):
    analysis.cluster_latents(x, 3, method="dbscan")
  with pytest.raises(ValueError, match="n_clusters"):
    analysis.cluster_latents(x[:2], 3)


def test_evaluate_latents_separated_blobs_vs_noise():
  x, y = _blobs(k=4)
  rng = np.random.default_rng(1)
  # A second column unrelated to the geometry, with some unknowns, and one with one value.
  other = rng.integers(0, 3, len(y))
  other[:10] = -1
  labels = {"genre": y, "language": other, "single": np.where(y == 0, 0, -1)}
  names = {"genre": list("abcd"), "language": ["en", "es", "fr"], "single": ["x"]}
  own = y.copy()
  res = analysis.evaluate_latents(x, labels, names, assignments=own)
  assert set(res) == {"genre", "language"}  # "single" has < 2 known values
  g = res["genre"]
  assert g["k"] == 4 and g["n"] == len(y)
  assert g["nmi"] > 0.9 and g["gmm"]["nmi"] > 0.9 and g["own"]["nmi"] == pytest.approx(1.0)
  assert set(analysis.METRIC_KEYS) <= set(g) and set(g["gmm"]) == set(analysis.METRIC_KEYS)
  assert res["language"]["k"] == 3 and res["language"]["n"] == len(y) - 10
  assert res["language"]["nmi"] < 0.2

  noise = rng.normal(size=(120, 8))
  res = analysis.evaluate_latents(
    noise, {"genre": rng.integers(0, 4, 120)}, {"genre": list("abcd")}
  )
  assert res["genre"]["nmi"] < 0.2 and res["genre"]["gmm"]["nmi"] < 0.2
  assert "own" not in res["genre"]


def test_cluster_space_standardizes_active_dimensions():
  # The label lives in a dimension of small spread; a wide dimension is unrelated noise and
  # a third dimension is dead (inactive). k-means on the raw means follows the wide noise.
  rng = np.random.default_rng(0)
  y = np.repeat([0, 1], 100)
  x = np.stack(
    [
      np.where(y == 1, 0.3, -0.3) + 0.05 * rng.normal(size=200),
      3.0 * rng.normal(size=200),
      1e-3 * rng.normal(size=200),
    ],
    axis=1,
  )
  labels, names = {"genre": y}, {"genre": ["a", "b"]}
  z, info = analysis.cluster_space(x, "standardized", threshold=0.01)
  assert info == {"space": "standardized", "dims": 2, "of": 3, "threshold": 0.01}
  np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
  assert analysis.evaluate_latents(z, labels, names)["genre"]["nmi"] > 0.95
  # The caller's count of active units wins (eval passes latent_usage's).
  _, given = analysis.cluster_space(x, "standardized", 0.01, active=np.array([1, 0, 0], bool))
  assert given["dims"] == 1
  raw, info = analysis.cluster_space(x, "raw", threshold=0.01)
  assert info == {"space": "raw", "dims": 3} and np.array_equal(raw, x)
  assert analysis.evaluate_latents(raw, labels, names)["genre"]["nmi"] < 0.1
  # The label is there, though not dominant: a linear probe reads it off the raw points.
  probe = analysis.evaluate_latents(raw, labels, names)["genre"]["linear_probe"]
  assert probe["acc"] > 0.95 and probe["chance"] == 0.5 and probe["folds"] == 5
  noise = analysis.linear_probe(rng.normal(size=(200, 3)), y)
  assert abs(noise["acc"] - 0.5) < 0.15 and noise["n"] == 200
  assert analysis.linear_probe(x, np.where(np.arange(200) == 0, 0, 1)) is None  # 1 point
  # A rare class is left out and counted; the others are still probed.
  rare = np.where(np.arange(200) == 0, 2, y)
  probe = analysis.linear_probe(raw, rare)
  assert probe["dropped_classes"] == 1 and probe["dropped_points"] == 1 and probe["acc"] > 0.95
  # Segments of one clip: 5 near-copies of a random point per clip (60-d, so a linear model
  # can fit any labelling of 40 clips), labels random per clip. Ungrouped, the probe scores
  # by recognizing clips it was trained on; grouped by clip, it is at chance.
  clip_of = np.repeat(np.arange(40), 5)
  clip_label = rng.integers(0, 2, 40)[clip_of]
  segments = rng.normal(size=(40, 60))[clip_of] + 0.01 * rng.normal(size=(200, 60))
  assert analysis.linear_probe(segments, clip_label)["acc"] > 0.95
  assert analysis.linear_probe(segments, clip_label, groups=clip_of)["acc"] < 0.75
  # Nothing active: clustered as it is, and the description says why.
  dead, info = analysis.cluster_space(x[:, 2:], "standardized", threshold=0.01)
  assert info["space"] == "raw" and "no dimension" in info["note"]
  with pytest.raises(ValueError, match="space"):
    analysis.cluster_space(x, "whitened", threshold=0.01)


def test_each_part_of_a_latent_shows_the_label_the_whole_hides():
  """A latent of two parts (as the multimodal 'split' fusion's audio and lyrics): genre in 3
  clean groups in the first 2 dimensions, language in 4 wider groups in the last 6. k-means
  on the whole follows language even with k = 3; each part clustered alone finds its label."""
  rng = np.random.default_rng(0)
  genre, language = np.arange(240) % 3, (np.arange(240) // 3) % 4
  corners = np.eye(4)[:, [0, 1, 2, 3, 0, 1]] * 3.0  # 4 groups, each 6-d
  audio = np.stack([np.cos(2 * np.pi * genre / 3), np.sin(2 * np.pi * genre / 3)], 1)
  x = np.concatenate([audio, corners[language]], 1) + 0.1 * rng.normal(size=(240, 8))
  labels = {"genre": genre, "language": language}
  names = {"genre": list("abc"), "language": list("wxyz")}
  whole = analysis.evaluate_latents(
    analysis.cluster_space(x, "standardized", 0.01)[0], labels, names
  )
  assert whole["language"]["nmi"] > 0.95 and whole["genre"]["nmi"] < 0.1
  parts = {"audio": (0, 2), "lyrics": (2, 8)}
  got = analysis.evaluate_parts(x, parts, labels, names, space="standardized", threshold=0.01)
  assert got["audio"]["dims"] == [0, 2] and got["lyrics"]["cluster_space"]["dims"] == 6
  assert got["audio"]["genre"]["nmi"] > 0.95 and got["audio"]["language"]["nmi"] < 0.1
  assert got["lyrics"]["language"]["nmi"] > 0.95 and got["lyrics"]["genre"]["nmi"] < 0.1
  # The caller's active units are restricted to each part: a part with none is clustered as
  # it is, and says so.
  active = np.array([0, 0, 1, 1, 1, 1, 1, 1], bool)
  got = analysis.evaluate_parts(
    x, parts, labels, names, space="standardized", threshold=0.01, active=active
  )
  assert "no dimension" in got["audio"]["cluster_space"]["note"]
  with pytest.raises(ValueError, match=r"part 'lyrics' is dimensions \[2, 9\)"):
    analysis.evaluate_parts(
      x, {"lyrics": (2, 9)}, labels, names, space="standardized", threshold=0.01
    )


def test_evaluate_latents_rejects_labels_out_of_sync_with_names():
  x, y = _blobs(k=3)
  with pytest.raises(ValueError, match="outside"):
    analysis.evaluate_latents(x, {"genre": y}, {"genre": ["a", "b"]})


def test_pca_kmeans_baseline_on_spectrogram_like_features():
  rng = np.random.default_rng(0)
  y = np.repeat([0, 1, 2], 15)
  # Each class lights up a different band of a [16, 10] "spectrogram"; the rest is noise.
  specs = rng.normal(0, 1, (len(y), 16, 10)).astype(np.float32)
  for c in range(3):
    specs[y == c, 5 * c : 5 * c + 5, :] += 4.0
  res = analysis.pca_kmeans_baseline(
    specs, {"genre": y}, {"genre": ["a", "b", "c"]}, n_components=64
  )  # > N-1: must be clipped
  assert res["genre"]["nmi"] > 0.9
  noise = rng.normal(0, 1, specs.shape)
  res = analysis.pca_kmeans_baseline(noise, {"genre": y}, {"genre": ["a", "b", "c"]})
  assert res["genre"]["nmi"] < 0.3


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _assert_png(path):
  assert os.path.getsize(path) > 1000
  with Image.open(path) as im:
    assert im.format == "PNG"
    return im.size


def _assert_rgb(array):
  assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3
  assert array.min() < array.max()  # something was drawn


def test_figure_to_array_matches_figure_size():
  fig = figures.new_figure(3, 2)
  fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
  a = figures.figure_to_array(fig)
  assert a.shape == (200, 300, 3)
  _assert_rgb(a)


def test_plot_embedding_2d_tsne(tmp_path):
  x, y = _blobs(n_per=12, k=3, dim=60)  # D > 50 exercises the PCA step; N=36 small perplexity
  unknown = y.copy()
  unknown[:5] = -1
  labels = {"genre": y, "language": unknown}
  names = {"genre": ["rock", "pop", "jazz"], "language": ["en", "es", "fr"]}
  path = plots.plot_embedding_2d(x, labels, names, str(tmp_path / "sub" / "tsne.png"))
  assert path.endswith("tsne.png")
  w, h = _assert_png(path)
  assert w > h  # two panels side by side
  _assert_rgb(plots.plot_embedding_2d(x[:6], {}, {}, None, return_array=True))


def test_plot_embedding_2d_umap_falls_back_with_a_log_line(tmp_path, monkeypatch, caplog):
  real_import = builtins.__import__

  def no_umap(name, *args, **kwargs):
    if name == "umap":
      raise ImportError("No module named 'umap'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_umap)
  x, y = _blobs(n_per=8, k=2, dim=4)
  with caplog.at_level(logging.WARNING, logger="jaxvae.evaluators.clustering"):
    path = plots.plot_embedding_2d(
      x, {"g": y}, {"g": ["a", "b"]}, str(tmp_path / "u.png"), method="umap"
    )
  _assert_png(path)
  assert "umap-learn is not installed" in caplog.text


def test_plot_embedding_2d_rejects_unknown_method(tmp_path):
  x, y = _blobs(n_per=5, k=2, dim=4)
  with pytest.raises(ValueError, match="tsne"):
    plots.plot_embedding_2d(x, {"g": y}, {"g": ["a", "b"]}, str(tmp_path / "x.png"), method="pca")


def test_metric_series_groups_train_and_val_and_skips_missing():
  history = [
    {"epoch": 1, "train/loss": 3.0, "val/loss": 3.5, "train/kl": 0.1, "note": "warmup"},
    {"epoch": 2, "train/loss": 2.0, "train/kl": 0.2},  # no val this epoch
    {"epoch": 3, "train/loss": 1.0, "val/loss": 1.5},  # no kl
  ]
  series = writer._metric_series(history)
  assert set(series) == {"loss", "kl"}  # the string "note" is not a curve
  assert series["loss"]["train"] == ([1, 2, 3], [3.0, 2.0, 1.0])
  assert series["loss"]["val"] == ([1, 3], [3.5, 1.5])
  assert series["kl"]["train"] == ([1, 2], [0.1, 0.2])


def test_plot_training_curves(tmp_path, caplog):
  history = [
    {
      "epoch": e,
      "train/loss": 1.0 / e,
      "val/loss": 1.2 / e,
      "train/recon": 0.8 / e,
      "train/kl": 0.1 * e,
    }
    for e in range(1, 6)
  ]
  history[2].pop("val/loss")
  path = writer.plot_training_curves(history, str(tmp_path / "curves.png"))
  _assert_png(path)
  with caplog.at_level(logging.WARNING, logger="jaxvae.evaluators.clustering"):
    a = writer.plot_training_curves(history, None, keys=["train/loss", "nope"], return_array=True)
  _assert_rgb(a)
  assert "nope" in caplog.text
  # Nothing to plot still gives an image rather than an exception mid-eval.
  _assert_rgb(writer.plot_training_curves([], None, return_array=True))


def test_plot_spectrogram_grid_and_row(tmp_path):
  rng = np.random.default_rng(0)
  originals = rng.normal(size=(10, 16, 24)).astype(np.float32)
  recons = originals + 0.1
  path = plots.plot_spectrogram_grid(
    originals,
    recons,
    str(tmp_path / "grid.png"),
    titles=[f"item {i}" for i in range(10)],
    max_items=4,
  )
  _assert_png(path)
  a = plots.plot_spectrogram_grid(
    originals[:, None], recons[:, None], None, return_array=True
  )  # a channel axis is accepted
  _assert_rgb(a)
  with pytest.raises(ValueError, match="differ"):
    plots.plot_spectrogram_grid(originals, recons[:, :8], None, return_array=True)
  row = plots.plot_spectrograms(originals[:3], str(tmp_path / "row.png"), ["a", "b", "c"])
  w, h = _assert_png(row)
  assert w > 2 * h
  _assert_rgb(plots.plot_spectrograms(originals[0], None, return_array=True))


def test_spectrogram_is_drawn_with_low_frequencies_at_the_bottom():
  spec = np.zeros((1, 8, 8), np.float32)
  spec[0, 0, :] = 1.0  # bright lowest mel band
  img = plots.plot_spectrograms(spec, None, return_array=True).astype(int)
  # magma maps 1.0 to pale yellow (252, 253, 191) and 0.0 to near black; the page is white.
  band = (img[..., 0] > 200) & (img[..., 2] < 220)
  dark = img.sum(-1) < 60
  wide = img.shape[1] // 3  # a filled image row, not the axes' black frame
  band_rows = np.where(band.sum(1) > wide)[0]
  dark_rows = np.where(dark.sum(1) > wide)[0]
  assert band_rows.size and dark_rows.size
  # Image row 0 is the top; the median ignores the one-pixel frame lines.
  assert band_rows.mean() > np.median(dark_rows)


def test_plot_without_path_or_array_is_an_error():
  with pytest.raises(ValueError, match="path"):
    plots.plot_spectrograms(np.zeros((1, 4, 4)), None)


# ----------------------------------------------------------------------------------------------
# Projector
# ----------------------------------------------------------------------------------------------


def _projector_files(logdir):
  found = {}
  for root, _, files in os.walk(logdir):
    for f in files:
      found[f] = os.path.join(root, f)
  return found


def test_write_projector_two_label_columns(tmp_path):
  x, y = _blobs(n_per=4, k=2, dim=5)
  lang = np.where(np.arange(len(y)) % 3 == 0, -1, 1)
  logdir = plots.write_projector(
    x,
    {"genre": y, "language": lang},
    {"genre": ["rock", "hip\thop"], "language": ["en", "es"]},
    str(tmp_path / "proj"),
  )
  files = _projector_files(logdir)
  assert {"tensors.tsv", "metadata.tsv", "projector_config.pbtxt"} <= set(files)
  tensors = np.loadtxt(files["tensors.tsv"], delimiter="\t")
  np.testing.assert_allclose(tensors, x, rtol=1e-5)
  rows = open(files["metadata.tsv"], encoding="utf8").read().splitlines()
  assert rows[0] == "genre\tlanguage"
  assert len(rows) == len(y) + 1
  expected = [
    f"{['rock', 'hip hop'][g]}\t{'unknown' if k < 0 else ['en', 'es'][k]}" for g, k in zip(y, lang)
  ]
  assert rows[1:] == expected


def test_write_projector_single_column_has_no_header(tmp_path):
  x, y = _blobs(n_per=3, k=2, dim=3)
  files = _projector_files(
    plots.write_projector(x, {"genre": y}, {"genre": ["a", "b"]}, str(tmp_path))
  )
  rows = open(files["metadata.tsv"], encoding="utf8").read().splitlines()
  assert rows == [["a", "b"][i] for i in y]


@pytest.mark.skipif(
  not os.environ.get("JAXVAE_SLOW_TESTS"),
  reason="UMAP's numba compile takes ~15-30 s; set JAXVAE_SLOW_TESTS=1",
)
def test_plot_embedding_2d_real_umap(tmp_path, caplog):
  pytest.importorskip("umap")
  x, y = _blobs(n_per=20, k=3, dim=8)
  with caplog.at_level(logging.WARNING, logger="jaxvae.evaluators.clustering"):
    path = plots.plot_embedding_2d(
      x, {"g": y}, {"g": ["a", "b", "c"]}, str(tmp_path / "umap.png"), method="umap"
    )
  _assert_png(path)
  assert "not installed" not in caplog.text


def test_identifier_columns_are_not_clustered():
  """A column whose value differs for (more than half of) the clips is an identifier, not a
  label: it is named with the reason; real labels and unknowns (-1) are not."""
  n = 24
  labels = {
    "genre": np.arange(n) % 3,
    "clip_id": np.arange(n),
    "title": np.where(np.arange(n) < 20, np.arange(n), -1),  # 20 known, all distinct
    "mostly_unknown": np.where(np.arange(n) < 3, np.arange(n), -1),  # too few known to judge
  }
  skipped = analysis.identifier_columns(labels)
  assert set(skipped) == {"clip_id", "title"}
  assert "24 distinct values for 24 clips" in skipped["clip_id"]

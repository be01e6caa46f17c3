"""Figures of the eval and analyze modes and of the training reports: 2-D latent maps coloured
by label, spectrogram grids, the embedding projector files, VQ code grids.

Labels follow the batch convention of docs/ARCHITECTURE.md: one int array per label column,
holding an index into `label_names[column]`, or -1 when the value is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import logging
import os
from typing import Any

import numpy as np

from jaxvae.evaluators import clustering
from jaxvae.training import figures

log = logging.getLogger(__name__)
# scikit-learn and scipy (about 1.3 s to import) are imported inside the functions that use
# them: every jaxvae process imports this module (main imports every mode), few use them.


def _embed_2d(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str]:
  """[N, D] -> ([N, 2], the method actually used)."""
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE

  n, d = x.shape
  if d > 50 and n > 2:  # PCA first: t-SNE / UMAP neighbours are cheaper and less noisy in 50-d
    x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x)
  if method == "umap":
    try:
      import umap  # pylint: disable=import-outside-toplevel
    except ImportError:
      log.warning(
        "plot_embedding_2d: umap-learn is not installed (pip install umap-learn); "
        "using t-SNE instead"
      )
      method = "tsne"
    else:
      reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), random_state=seed)
      return reducer.fit_transform(x), "umap"
  if method != "tsne":
    raise ValueError(f"method must be 'tsne' or 'umap', got {method!r}")
  # t-SNE needs perplexity < N; for small N keep it under N/3 so neighbourhoods stay local.
  perplexity = min(30.0, max(1.0, (n - 1) / 3.0))
  tsne = TSNE(
    n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
  )
  return tsne.fit_transform(x), "tsne"


def _label_text(names: Sequence[str], index: int) -> str:
  if index == clustering.UNKNOWN:
    return "unknown"
  return str(names[index]) if 0 <= index < len(names) else str(index)


def _scatter_by_label(
  ax, xy: np.ndarray, y: np.ndarray | None, names: Sequence[str], title: str
) -> None:
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
    color = (0.7, 0.7, 0.7) if v == clustering.UNKNOWN else cmap(int(v) % cmap.N)
    ax.scatter(
      xy[sel, 0],
      xy[sel, 1],
      s=8,
      color=color,
      label=_label_text(names, int(v)),
      zorder=1 if v == clustering.UNKNOWN else 2,
    )
  ax.legend(
    fontsize="x-small",
    markerscale=1.5,
    loc="upper left",
    bbox_to_anchor=(1.0, 1.0),
    ncol=1 + len(values) // 25,
    frameon=False,
  )


def _colormap(n: int):
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel

  if n <= 10:
    return colormaps["tab10"]
  if n <= 20:
    return colormaps["tab20"]
  return colormaps["turbo"].resampled(n)


def plot_embedding_2d(
  latents: np.ndarray,
  labels: Mapping[str, np.ndarray],
  label_names: Mapping[str, Sequence[str]],
  path: str | None,
  *,
  method: str = "tsne",
  seed: int = 0,
  title: str | None = None,
  return_array: bool = False,
):
  """2-D t-SNE or UMAP of the latents, one panel per label column coloured by its values.

  UMAP falls back to t-SNE (with a warning) when umap-learn is missing. With no label
  columns a single uncoloured panel is drawn. Returns `path`, or the RGB array when
  `return_array` (then `path` may be None to skip the file).
  """
  x = clustering.flatten(latents).astype(np.float32)
  if x.shape[0] < 2:
    raise ValueError(f"plot_embedding_2d needs at least 2 points, got {x.shape[0]}")
  columns = clustering.label_columns(labels, x.shape[0])
  xy, used = _embed_2d(x, method, seed)
  panels = list(columns.items()) or [("", None)]
  fig = figures.new_figure(5.5 * len(panels), 4.5)
  for i, (name, y) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), i + 1)
    _scatter_by_label(ax, xy, y, label_names.get(name, ()), name or "latents")
  fig.suptitle(title or f"latents ({used}, N={x.shape[0]})")
  fig.tight_layout()
  return figures.finish(fig, path, return_array)


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
  ax.imshow(
    image,
    origin="lower",
    aspect="auto",
    cmap="magma",
    vmin=vmin,
    vmax=vmax,
    interpolation="nearest",
  )
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize="small")


def plot_spectrogram_grid(
  originals: np.ndarray,
  recons: np.ndarray,
  path: str | None,
  *,
  titles: Sequence[str] | None = None,
  max_items: int = 8,
  return_array: bool = False,
):
  """Inputs on the top row, reconstructions below, at most `max_items` columns.

  Each column shares one colour scale so a reconstruction's level errors stay visible. The
  grid is one mosaic image on one axes (each column scaled to [0, 1] by its own range, low
  frequencies at the bottom): a figure of 2n axes costs several times more to build.
  """
  a, b = _as_images(originals, "originals"), _as_images(recons, "recons")
  if a.shape != b.shape:
    raise ValueError(f"originals {a.shape} and recons {b.shape} differ in shape")
  n = min(len(a), max_items)
  rows, cols = a.shape[1:]
  gap = max(1, cols // 16)
  mosaic = np.full((2 * rows + gap, n * (cols + gap) - gap), np.nan, np.float32)
  for j in range(n):
    lo, hi = float(min(a[j].min(), b[j].min())), float(max(a[j].max(), b[j].max()))
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    x0 = j * (cols + gap)
    # Row 0 of the mosaic is drawn at the bottom (origin="lower"): reconstructions there.
    mosaic[:rows, x0 : x0 + cols] = (b[j] - lo) * scale
    mosaic[rows + gap :, x0 : x0 + cols] = (a[j] - lo) * scale
  width = 2.2 * n + 1.3
  fig = figures.new_figure(width, 4.4)
  ax = fig.add_axes((1.25 / width, 0.02, 1 - 1.32 / width, 0.9))
  cmap = _magma_with_white_gaps()
  ax.imshow(
    mosaic, origin="lower", aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest"
  )
  ax.set_xticks([])
  ax.set_yticks([rows / 2, rows + gap + rows / 2], ["reconstruction", "input"])
  ax.tick_params(length=0)
  for spine in ax.spines.values():
    spine.set_visible(False)
  if titles is not None:
    for j in range(min(n, len(titles))):
      ax.text(j * (cols + gap) + cols / 2, 2 * rows + gap, titles[j], ha="center", va="bottom")
  return figures.finish(fig, path, return_array)


def _magma_with_white_gaps():
  from matplotlib import colormaps

  cmap = colormaps["magma"].copy()
  cmap.set_bad("white")
  return cmap


def plot_spectrograms(
  specs: np.ndarray,
  path: str | None,
  titles: Sequence[str] | None = None,
  *,
  max_items: int | None = None,
  return_array: bool = False,
):
  """One row of spectrograms (e.g. samples from the prior), each on its own colour scale."""
  a = _as_images(specs, "specs")
  n = len(a) if max_items is None else min(len(a), max_items)
  fig = figures.new_figure(2.2 * n + 0.4, 2.6)
  for j in range(n):
    _show(
      fig.add_subplot(1, n, j + 1),
      a[j],
      titles[j] if titles is not None and j < len(titles) else None,
    )
  fig.tight_layout()
  return figures.finish(fig, path, return_array)


def plot_bitrates(rows: Sequence[dict], path: str | None, return_array: bool = False):
  """A codec's reconstruction against its bitrate: mel L1 (dB, lower is better) and SI-SDR (dB,
  higher is better) per number of residual codebooks (`evaluators.waveform`'s rows)."""
  kbps = [r["kbps"] for r in rows]
  fig = figures.new_figure(8.0, 3.2)
  for j, (key, label) in enumerate((("mel_l1_db", "mel L1 (dB)"), ("si_sdr_db", "SI-SDR (dB)"))):
    ax = fig.add_subplot(1, 2, j + 1)
    ax.plot(kbps, [r[key] for r in rows], "o-")
    for r in rows:
      ax.annotate(
        str(r["codebooks"]), (r["kbps"], r[key]), textcoords="offset points", xytext=(3, 3)
      )
    ax.set_xlabel("kbps (codebooks used)")
    ax.set_ylabel(label)
  fig.tight_layout()
  return figures.finish(fig, path, return_array)


# ----------------------------------------------------------------------------------------------
# TensorBoard projector
# ----------------------------------------------------------------------------------------------


def _tsv_safe(text: str) -> str:
  return " ".join(str(text).split())  # tabs / newlines would break the metadata table


def write_projector(
  latents: np.ndarray,
  labels: Mapping[str, np.ndarray],
  label_names: Mapping[str, Sequence[str]],
  logdir: str,
  *,
  tag: str = "latents",
  global_step: int = 0,
) -> str:
  """Writes the latents and their labels for TensorBoard's projector; returns `logdir`.

  Metadata has one column per label column (value names, "unknown" for -1). The projector
  reads a one-column file as headerless, so a single column is written without a header.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

  x = clustering.flatten(latents).astype(np.float32)
  columns = clustering.label_columns(labels, x.shape[0])
  rows = [
    [_tsv_safe(_label_text(label_names.get(name, ()), int(y[i]))) for name, y in columns.items()]
    for i in range(x.shape[0])
  ]
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
    writer.add_embedding(
      x, metadata=metadata, global_step=global_step, tag=tag, metadata_header=header
    )
  finally:
    writer.close()
  return logdir


def plot_puzzle(
  x: np.ndarray, recon: np.ndarray, codes: np.ndarray, num_codes: int, path: str, title: str
) -> str:
  """Input spectrogram, its reconstruction and its code grid side by side."""
  fig = figures.new_figure(11, 3.4)
  fig.set_layout_engine("constrained")
  axes = fig.subplots(1, 3)
  for ax, img, name in ((axes[0], x, "input"), (axes[1], recon, "reconstruction")):
    ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_title(name)
  im = axes[2].imshow(
    codes,
    origin="lower",
    cmap="tab10" if num_codes <= 10 else "tab20",
    vmin=-0.5,
    vmax=num_codes - 0.5,
  )
  axes[2].set_title(f"codes ({codes.shape[0]} x {codes.shape[1]})")
  fig.colorbar(im, ax=axes[2], ticks=range(num_codes))
  fig.suptitle(title)
  return figures.finish(fig, path, False)

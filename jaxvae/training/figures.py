"""Matplotlib figures without pyplot: made on an explicit Agg canvas (importing this never
changes a caller's backend, e.g. a notebook's), rendered to RGB arrays for TensorBoard, and
saved atomically (a kill never leaves half a PNG).

matplotlib (about 0.7 s to import) is imported by the first figure, not by every process:
`jaxvae.main` imports every mode, and most runs draw nothing until an epoch ends.
"""

from __future__ import annotations

import os

import numpy as np

from jaxvae import workdir as workdir_lib

# zlib level 1: a figure's PNG encodes about 4x faster than at the default level 6, for
# files about 1.5x larger.
_PNG = {"compress_level": 1}


def new_figure(width: float, height: float):
  """A matplotlib `Figure` on its own Agg canvas (no pyplot)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)  # attaches itself as fig.canvas
  return fig


def figure_to_array(fig) -> np.ndarray:
  """Renders a figure to uint8 [H, W, 3] RGB, for tensorboardX `add_image(dataformats="HWC")`."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg

  if not isinstance(fig.canvas, FigureCanvasAgg):
    FigureCanvasAgg(fig)  # a pyplot figure under a non-Agg backend cannot hand out its pixels
  fig.canvas.draw()
  return np.array(fig.canvas.buffer_rgba(), dtype=np.uint8)[..., :3]


def finish(fig, path: str | os.PathLike | None, return_array: bool):
  """Saves and/or renders a figure, then drops it; returns the path or the RGB array. The
  figure is drawn once: the PNG is written from the same pixels the array holds."""
  try:
    if path is None and not return_array:
      raise ValueError("give a path, or return_array=True, or both")
    if path is not None and not return_array:
      path = os.fspath(path)
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      with workdir_lib.atomic_path(path) as tmp:  # a kill never leaves half a PNG
        fig.savefig(tmp, pil_kwargs=_PNG)
      return path
    rgb = figure_to_array(fig)
    if path is not None:
      from matplotlib import image as mpl_image

      path = os.fspath(path)
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      with workdir_lib.atomic_path(path) as tmp:
        mpl_image.imsave(tmp, rgb, format="png", pil_kwargs=_PNG)
    return rgb
  finally:
    # Not registered with pyplot: dropping the canvas's reference frees it with its axes
    # (`fig.clear()` would rebuild every axis' ticks first, 40 % of a grid's cost).
    fig.canvas = None

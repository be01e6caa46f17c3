"""The validation loss and the objective's other metrics over the whole validation split
(example-weighted means; VQ code usage summed), as the training loop computes them."""

from __future__ import annotations

from jaxvae.training import metrics


class Validation:
  """`run(state)` -> the objective's metrics over `examples` (the validation split by
  default), without the raw histograms."""

  def __init__(self, job, examples=None):
    self.job = job
    self.examples = job.val_examples if examples is None else examples

  def run(self, state) -> dict:
    out = metrics.evaluate(self.job, state, self.examples)
    out.pop("histograms", None)
    return out

"""Cross-modal coherence of a model that decodes lyrics from its latent (the multimodal VAE):
whether the lyrics it decodes from the audio alone carry the labels that real lyrics carry,
as MMVAE and MoPoE-VAE judge a joint latent by generating one modality from another.

The judge is the same for every source: the nearest class centroid (cosine) of the training
clips' real lyrics embeddings. Its accuracy on the validation clips' real lyrics is the
ceiling; on lyrics decoded from the joint posterior (audio + lyrics) it measures the lyrics'
reconstruction; from the audio alone (no lyrics given) it measures what the audio's posterior
carries over to the other modality.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxvae.data import pipeline

UNKNOWN = -1
JUDGE = "nearest class centroid (cosine) of the training clips' real lyrics embeddings"


def _unit(v: np.ndarray) -> np.ndarray:
  return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def centroid_accuracy(
  reference: np.ndarray, reference_labels: np.ndarray, queries: dict, labels: np.ndarray
) -> dict:
  """Accuracy of each `queries[name]` [N, D] against `labels` [N] when each is given the label
  of the nearest class centroid (cosine) of `reference` [M, D] (labelled `reference_labels`).
  Unknown labels (-1) are left out on both sides. Returns {name: accuracy, "n", "chance"
  (the majority class's share among the scored), "classes"}; None with fewer than 2 classes."""
  keep = reference_labels != UNKNOWN
  classes = np.unique(reference_labels[keep])
  scored = np.isin(labels, classes)
  if len(classes) < 2 or not scored.any():
    return None
  ref = _unit(np.asarray(reference, np.float64)[keep])
  centroids = _unit(np.stack([ref[reference_labels[keep] == c].mean(0) for c in classes]))
  y = labels[scored]
  out = {}
  for name, q in queries.items():
    pred = classes[np.argmax(_unit(np.asarray(q, np.float64)[scored]) @ centroids.T, axis=1)]
    out[name] = float(np.mean(pred == y))
  counts = np.unique(y, return_counts=True)[1]
  return out | {"n": int(scored.sum()), "chance": float(counts.max() / counts.sum())}


def lyrics_coherence(run, state, examples, labels: dict, train: np.ndarray, val: np.ndarray):
  """{label: {"real", "joint", "audio_only", "n", "chance"}} on the validation clips with
  lyrics (`val`, a boolean mask over `examples`; centroids from the `train` ones), plus
  "judge"; {"available": False, "reason"} where it cannot be measured."""
  if examples.lyrics is None:
    return {"available": False, "reason": "the run has no lyrics embeddings"}
  variables = {"params": state.params, **state.model_state}
  decode = jax.jit(lambda v, z: run.model.apply(v, z, method="decode_lyrics"))
  chunks: dict[str, list] = {}
  for batch in pipeline.eval_batches(examples, run.config.train.batch_size):
    real = batch["mask"] > 0
    alone = dict(batch, lyrics_mask=np.zeros_like(batch["lyrics_mask"]))
    for name, b in (("joint", batch), ("audio_only", alone)):
      mu = run.gather(run.forward(state, run.put(b))["mu"])
      chunks.setdefault(name, []).append(np.asarray(jax.device_get(decode(variables, mu)))[real])
    chunks.setdefault("real", []).append(batch["lyrics"][real])
    chunks.setdefault("has", []).append(batch["lyrics_mask"][real] > 0)
  got = {k: np.concatenate(v) for k, v in chunks.items()}
  has = got.pop("has")
  out: dict = {"available": True, "judge": JUDGE, "split": "validation"}
  for name, y in labels.items():
    ref = train & has
    scores = centroid_accuracy(
      got["real"][ref], y[ref], {k: v[val & has] for k, v in got.items()}, y[val & has]
    )
    if scores is not None:
      out[name] = scores
  return out

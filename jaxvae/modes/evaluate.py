"""`--mode=eval`: the evaluators of the restored best checkpoint (else the newest intact
latest one), into `DIR/eval/metrics.json`.

Audio models: validation metrics and how well the latent space clusters by each label, next
to a PCA + k-means baseline, with t-SNE plots and a projector dump
(`jaxvae.evaluators.latents`). Token models (`data.kind=midi`): validation token NLL and
perplexity and the statistics of generated pieces against the validation windows
(`jaxvae.evaluators.music`), also in TensorBoard under `eval/`, the pieces as
`DIR/eval/samples/sample_XX.mid`.
"""

from __future__ import annotations

import json
import os

from jaxvae import workdir as workdir_lib
from jaxvae.evaluators import music
from jaxvae.evaluators.latents import Latents
from jaxvae.evaluators.validation import Validation
from jaxvae.symbolic import stats as music_stats
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib


def run(config, workdir: str, args) -> int:
  del args
  job = builder.setup(config)
  state, _ = checkpoint.restore(workdir, job.state)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  if config.data.kind == "midi":
    results = music.MusicStatistics(job, out_dir).run(state)
  else:
    results = {"step": int(state.step), "val": Validation(job).run(state)}
    results |= Latents(job, out_dir).run(state)
  path = os.path.join(out_dir, "metrics.json")
  workdir_lib.write_json(path, results, indent=2)
  if config.data.kind == "midi":
    writer = writer_lib.Writer(workdir, config)
    try:
      writer.scalars(int(state.step), music.tensorboard_scalars(results))
    finally:
      writer.close()
    _print_music(results)
    print(f"wrote {path}")
  else:
    _print_audio(results)
  return 0


def _print_audio(results: dict) -> None:
  print(json.dumps({"val": results["val"]}, indent=2))
  for name, r in results.items():
    if isinstance(r, dict) and "nmi" in r and name != "baseline_pca_kmeans":
      print(
        f"{name}: nmi {r['nmi']:.3f}  ari {r['ari']:.3f}  acc {r['acc']:.3f}  "
        f"purity {r['purity']:.3f}"
      )


def _fmt(v) -> str:
  return "n/a" if v is None else f"{v:.3f}"


def _print_music(results: dict) -> None:
  val, gen, data, dist = (results[k] for k in ("val", "generated", "data", "distance"))
  print(f"val: nll {val['nll']:.4f}  ppl {val['ppl']:.2f}  accuracy {_fmt(val.get('accuracy'))}")
  print(
    f"generated ({gen['pieces']} pieces, {gen['empty']} empty) vs data "
    f"({data['pieces']} validation windows):"
  )
  for k in music_stats.SCALARS:
    print(
      f"  {k:<14} {_fmt(gen[k]):>8} vs {_fmt(data[k]):>8}  overlap {_fmt(dist['overlap_area'][k])}"
    )
  print(f"  pitch classes: JS {_fmt(dist['pitch_class_js'])}  L1 {_fmt(dist['pitch_class_l1'])}")

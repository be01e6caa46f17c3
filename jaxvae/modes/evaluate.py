"""`--mode=eval`: the config's evaluator (`jaxvae.evaluators.suite.for_eval`) on the restored
best checkpoint (else the newest intact latest one), into `DIR/eval/metrics.json`.

Audio models: validation metrics and how well the latent space clusters by each label, next
to a PCA + k-means baseline, with t-SNE plots and a projector dump
(`jaxvae.evaluators.latents`). Token models (`data.kind=midi`): validation token NLL and
perplexity and the statistics of generated pieces against the validation windows
(`jaxvae.evaluators.music`), also in TensorBoard under `eval/`, the pieces as
`DIR/eval/samples/sample_XX.mid`.
"""

from __future__ import annotations

import os

from jaxvae import workdir as workdir_lib
from jaxvae.evaluators import suite
from jaxvae.training import builder
from jaxvae.training import checkpoint
from jaxvae.training import writer as writer_lib


def run(config, workdir: str, args) -> int:
  job = builder.setup(config, progress=args.progress)
  writer_lib.check_tokenizer(workdir, job.store, "the workdir")
  state, _ = checkpoint.restore(workdir, job.state)
  builder.check_outputs(job, state)
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  evaluator = suite.for_eval(job, out_dir)
  results = evaluator.run(state)
  path = os.path.join(out_dir, "metrics.json")
  workdir_lib.write_json(path, results, indent=2)
  scalars = evaluator.scalars(results)
  if scalars:
    writer = writer_lib.Writer(workdir, config)
    try:
      writer.scalars(int(state.step), scalars)
    finally:
      writer.close()
  print(evaluator.summary(results))
  print(f"wrote {path}")
  return 0

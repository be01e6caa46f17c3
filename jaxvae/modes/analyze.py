"""`--mode=analyze`: the trained model against the untrained one (same init seed) on the
validation split, as the original puzzle VQ-VAE reported it, plus the code grids ("puzzles") of a
few clips. Writes `DIR/analysis.json`, `DIR/analysis.md` and `DIR/analysis/puzzle_<i>.png`.
"""

from __future__ import annotations

import os

import numpy as np

from jaxvae import workdir as workdir_lib
from jaxvae.data import pipeline
from jaxvae.evaluators import plots
from jaxvae.evaluators import untrained
from jaxvae.training import builder
from jaxvae.training import checkpoint

NUM_PUZZLES = 4


def run(config, workdir: str, args) -> int:
  job = builder.setup(config, progress=args.progress)
  state, _ = checkpoint.restore(workdir, job.state)
  evaluator = untrained.Untrained(job)
  result = evaluator.run(state)
  os.makedirs(os.path.join(workdir, "analysis"), exist_ok=True)
  batch = next(pipeline.eval_batches(job.val_examples, config.train.batch_size))
  outputs = job.forward(state, job.put(batch))
  if "codes" in outputs:
    codes, recon = np.asarray(outputs["codes"]), np.asarray(outputs["recon"])
    clip_ids = [
      job.store.manifest["examples"][int(j)]["clip_id"]
      for j in job.val_examples.indices[:NUM_PUZZLES]
    ]
    result["puzzles"] = [
      plots.plot_puzzle(
        batch["x"][i],
        recon[i],
        codes[i] if codes.ndim == 3 else codes[i][..., 0],  # rvq: the first level
        int(job.model.codebook_size),
        os.path.join(workdir, "analysis", f"puzzle_{i}.png"),
        clip_ids[i],
      )
      for i in range(min(NUM_PUZZLES, len(clip_ids)))
    ]
  workdir_lib.write_json(os.path.join(workdir, "analysis.json"), result, indent=2)
  table = evaluator.summary(result)
  title = f"# {config.model.name}: trained vs untrained (validation split)"
  workdir_lib.write_text(os.path.join(workdir, "analysis.md"), f"{title}\n\n{table}")
  print(table)
  return 0

"""`--mode=train` (the default): train or resume in the workdir, with the listening reports
at epoch ends."""

from __future__ import annotations

from jaxvae.evaluators import report
from jaxvae.training import loop


def run(config, workdir: str, args) -> int:
  loop.train_and_evaluate(
    config, workdir, progress=args.progress, epoch_hooks=report.training_hooks
  )
  return 0

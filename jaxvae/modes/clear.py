"""`--clear`: remove a run's outputs before the mode runs; refuses folders that are not
jaxvae workdirs."""

from __future__ import annotations

import os
import shutil

from jaxvae.errors import ConfigError
from jaxvae.training import writer as writer_lib


def clear(workdir: str) -> int:
  """Removes a run's outputs; refuses folders that are not jaxvae workdirs."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    print(f"nothing to clear: '{workdir}' does not exist")
    return 0
  if not writer_lib.is_workdir(workdir):
    raise ConfigError(
      f"--clear refuses '{workdir}': it is not a jaxvae workdir (no {writer_lib.MARKER})"
    )
  for name in writer_lib.RUN_OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  print(f"cleared {workdir}")
  return 0

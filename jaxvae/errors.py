"""Every user-facing error type: the ones that end a run with one line and exit status 1.

`jaxvae.main` prints `error: <message>` for each type in `USER_ERRORS`; the message alone must
tell the user what went wrong, where (file, key, step, process) and what to do. This module
imports nothing of jaxvae, so every layer can raise these.
"""


class ConfigError(ValueError):
  """A config key is unknown or has a value outside what is allowed."""


class DataError(ValueError):
  """A dataset (not a single file) cannot be read as configured."""


class AudioError(Exception):
  """One audio file cannot be used. `reason` is one of `jaxvae.audio.decode.REASONS`; `path`
  names the file."""

  def __init__(self, reason: str, path: str, detail: str = ""):
    self.reason = reason
    self.path = path
    self.detail = detail
    super().__init__(f"{path!r}: {reason}" + (f" ({detail})" if detail else ""))

  def __reduce__(self):
    # Data-loader worker processes send exceptions back pickled; the default would call
    # AudioError(message) and fail, hiding the real error.
    return (AudioError, (self.reason, self.path, self.detail))


class MidiError(Exception):
  """A MIDI file that cannot be turned into tokens; names the file and the reason."""

  def __init__(self, path, reason: str):
    self.path = str(path)
    self.reason = reason
    super().__init__(f"{self.path}: {reason}")

  def __reduce__(self):  # pickled across processes as AudioError is
    return (MidiError, (self.path, self.reason))


class DownloadError(Exception):
  """A dataset archive cannot be fetched, verified or extracted; names the URL or file and
  what to do."""


class LyricsModelError(RuntimeError):
  """The text encoder cannot be loaded (not on disk, not a model folder, missing packages)."""


class RunError(Exception):
  """Base of the run-level errors below."""


class WorkdirBusyError(RunError):
  """Another live process is writing the workdir."""


class WorkdirError(RunError):
  """The workdir cannot be created or written."""


class CheckpointError(RunError):
  """No checkpoint of the workdir can be restored."""


class DivergedError(RunError):
  """Training produced non-finite losses, gradients or parameters too many steps in a row."""


class DiskFullError(RunError):
  """A write of run state failed for lack of space (ENOSPC) or quota (EDQUOT); names the path,
  the step, what to free and where the re-run resumes."""


class NonFiniteOutputError(RunError):
  """A model's outputs are not finite (a diverged model): nothing is decoded, drawn, played
  or exported from them."""


# What `jaxvae.main` (and the tools) report as one line, exit status 1.
USER_ERRORS = (
  ConfigError,
  DataError,
  DownloadError,
  AudioError,
  MidiError,
  LyricsModelError,
  RunError,
  FileNotFoundError,
)

"""Errors that kdprune's entry points turn into one line on stderr."""

from absl import app


class ConfigError(app.UsageError):
  """A flag, a flag combination or a named file is invalid.

  Raised before any data is loaded or any model built. The message names the
  flag or file and what is wrong, on one line.
  """


class StageError(RuntimeError):
  """A stage failed while running (e.g. a non-finite loss, a corrupt artifact)."""

  def __init__(self, stage: str, message: str):
    super().__init__("%s stage: %s" % (stage, message))
    self.stage = stage

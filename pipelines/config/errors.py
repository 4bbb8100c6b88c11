"""Errors that kdprune's entry points turn into one line on stderr.

``ConfigError`` (exit 2, before any work) is defined in :mod:`models.errors`
so that the model library can raise it without importing ``pipelines``.
"""

from models.errors import ConfigError

__all__ = ["ConfigError", "StageError"]


class StageError(RuntimeError):
  """A stage failed while running (e.g. a non-finite loss, a corrupt artifact)."""

  def __init__(self, stage: str, message: str):
    super().__init__("%s stage: %s" % (stage, message))
    self.stage = stage

"""The error a bad model flag or builder raises (one line, naming the flag).

It lives here, at the bottom, so that ``models/`` depends on nothing of
``pipelines/``; :mod:`pipelines.config.errors` re-exports it as the one
``ConfigError`` every kdprune layer raises and every entry point turns into
one line on stderr (exit 2).
"""

from absl import app


class ConfigError(app.UsageError):
  """A flag, a flag combination or a named file is invalid.

  Raised before any data is loaded or any model built. The message names the
  flag or file and what is wrong, on one line.
  """

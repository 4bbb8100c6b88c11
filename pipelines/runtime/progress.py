"""kdprune's progress lines, through Python's ``logging`` (logger ``kdprune``).

Every stage reports what it does in plain lines on stdout (``[student/default]
running -> ...``). They go through the ``kdprune`` logger, so a notebook or a
job that embeds kdprune can route, silence or format them like any other
library's logs (``logging.getLogger("kdprune").setLevel(logging.WARNING)``),
and the entry points' ``--verbosity`` sets its level: ``-1`` keeps warnings
and errors only, ``0`` (default) the progress lines, ``1`` adds debug lines.

The handler writes the bare message to whatever ``sys.stdout`` is at the time
(a test runner or notebook may have replaced it), as ``print`` did.
"""

import logging
import sys

LOGGER = logging.getLogger("kdprune")


class _StdoutHandler(logging.Handler):
  """Writes each record's message, unformatted, to the current ``sys.stdout``."""

  def emit(self, record):
    try:
      sys.stdout.write(self.format(record) + "\n")
      sys.stdout.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _configure():
  if not any(isinstance(h, _StdoutHandler) for h in LOGGER.handlers):
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(handler)
  if LOGGER.level == logging.NOTSET:
    LOGGER.setLevel(logging.INFO)
  LOGGER.propagate = False  # absl's root handler would print every line a second time


_configure()


def say(message: str) -> None:
  """A progress line (INFO)."""
  LOGGER.info(message)


def warn(message: str) -> None:
  """A line the user should act on (WARNING): shown even at ``--verbosity=-1``."""
  LOGGER.warning(message)


def debug(message: str) -> None:
  LOGGER.debug(message)


def set_verbosity(verbosity: int) -> None:
  """Maps absl's ``--verbosity`` (-3..1+) onto the ``kdprune`` logger's level."""
  if verbosity >= 1:
    level = logging.DEBUG
  elif verbosity == 0:
    level = logging.INFO
  elif verbosity == -1:
    level = logging.WARNING
  else:
    level = logging.ERROR
  LOGGER.setLevel(level)

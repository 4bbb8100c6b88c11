"""Entry-point plumbing: absl ``app.run`` with one-line errors instead of usage dumps.

absl prints the whole flag list for a ``UsageError``; kdprune prints one line
naming the flag or file, exits 2 for usage errors and 1 for stage failures,
and never shows a traceback for either (the traceback of an unexpected
failure is kept in ``<workdir>/<stage>/error.txt``).
"""

import sys

from absl import app, flags, logging

from pipelines.errors import ConfigError, StageError


_HELP_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "h", "?"}


def _one_line(text) -> str:
  return " ".join(str(text).split())


def _die(program: str, message: str, code: int):
  sys.stdout.flush()
  sys.stderr.write("%s: error: %s\n" % (program, _one_line(message)))
  sys.stderr.flush()
  sys.exit(code)


def run(main, program: str) -> None:
  """``app.run(main)`` with kdprune's error handling; ``program`` prefixes errors."""
  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      _die(program, e, 2)
    except SystemExit as e:
      # absl's --help/--helpfull/--helpshort print the help and exit 1; asking
      # for help is not an error.
      asked = any(a.split("=")[0].lstrip("-") in _HELP_FLAGS for a in argv[1:])
      if asked and e.code == 1:
        sys.exit(0)
      raise

  def wrapped(argv):
    if len(argv) > 1:
      _die(program, "unexpected argument(s) %s; flags look like --name=value" % " ".join(argv[1:]), 2)
    if not flags.FLAGS["verbosity"].present:
      # absl raises logging to INFO after parsing; library INFO chatter (TFDS
      # readers, ...) would bury the progress users watch. --verbosity=0 restores it.
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except ConfigError as e:
      _die(program, e, 2)
    except app.UsageError as e:
      _die(program, e, 2)
    except StageError as e:
      _die(program, e, 1)
    except KeyboardInterrupt:
      _die(program, "interrupted", 130)

  app.run(wrapped, flags_parser=parse)


def entry(main, program: str, required=("workdir",)) -> None:
  """A console script: define every kdprune flag, mark ``required``, run ``main``."""
  from pipelines import flags as kflags  # pylint: disable=g-import-not-at-top
  kflags.define_flags()
  for name in required:
    flags.mark_flag_as_required(name)
  run(main, program)

"""Entry-point plumbing: absl ``app.run`` with one-line errors instead of usage dumps.

Every console script is ``entry(main, program)``; a stage's ``main`` is
:func:`run_stage` with the stage's module and its config from the flags.

absl prints the whole flag list for a ``UsageError``; kdprune prints one line
naming the flag or file, exits 2 for usage errors and 1 for stage failures,
and never shows a traceback for either (the traceback of an unexpected
failure is kept in ``<workdir>/<stage>/error.txt``).
"""

import json
import sys

from absl import app, flags, logging

from pipelines.cli import flags as kflags
from pipelines.config.errors import ConfigError, StageError
from pipelines.runtime import distribute, progress
from pipelines.runtime import execute, rundir

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
    else:  # kdprune's own lines follow --verbosity (-1: warnings only; 1: debug too)
      progress.set_verbosity(flags.FLAGS.verbosity)
    try:
      result = main(argv)
      distribute.finish()  # multi-worker: no process leaves while a peer is in a collective
      return result
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
  kflags.define_flags()
  for name in required:
    flags.mark_flag_as_required(name)
  run(main, program)


def run_stage(stage, config, after=None):
  """A stage's console entry: validate, run through the manifest, print the result as JSON.

  ``stage`` is a :class:`pipelines.runtime.execute.Stage` (a stage module's ``STAGE``);
  ``after(workdir)`` may print more (the export stage prints its table).
  """
  # The checks that read no data first (a dataset may need TensorFlow and preparing): the flags,
  # the run directory, the upstream stages in the manifest; then the stage's own validation.
  config.validate()
  workdir = kflags.FLAGS.workdir
  rundir.check_workdir(workdir)
  stage.check_upstream(config, workdir)
  distribute.setup(kflags.FLAGS.strategy, lambda: stage.validate(config))
  outcome = execute.run_stage(stage, config, workdir, force=kflags.FLAGS.force)
  if after is not None:
    after(workdir)
  print(json.dumps({"stage": config.stage, "ran": outcome.ran,
                    **outcome.entry.get("metrics", {})}))
  return outcome

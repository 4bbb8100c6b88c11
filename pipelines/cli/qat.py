"""``kdprune-qat``: the qat stage from the command line (``python -m pipelines.cli.qat``).

See :mod:`pipelines.stages.qat` for what it does and writes.
"""

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.stages import qat


def main(argv):
  del argv
  app.run_stage(qat.STAGE, kflags.qat_config_from_flags())


def entry_point():
  app.entry(main, "kdprune-qat")


if __name__ == "__main__":
  entry_point()

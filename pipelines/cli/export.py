"""``kdprune-export``: the export stage from the command line (``python -m pipelines.cli.export``).

See :mod:`pipelines.stages.export` for what it does and writes; the model table is printed at
the end.
"""

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.export import report
from pipelines.stages import export


def main(argv):
  del argv
  config = kflags.export_config_from_flags()
  app.run_stage(export.STAGE, config, after=lambda workdir: print(report.table(workdir, config.name)))


def entry_point():
  app.entry(main, "kdprune-export")


if __name__ == "__main__":
  entry_point()

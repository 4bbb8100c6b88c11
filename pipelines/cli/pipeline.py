"""``kdprune-pipeline``: every stage in order through one run directory
(``python -m pipelines.cli.pipeline``).

  kdprune-pipeline --workdir=runs/quickstart                              # embedded digits
  kdprune-pipeline --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

See :mod:`pipelines.stages.pipeline`; the table of results is printed at the end.
"""

import time

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.export import report
from pipelines.runtime import distribute, rundir
from pipelines.stages import pipeline


def main(argv):
  del argv
  config = kflags.pipeline_config_from_flags()
  rundir.check_workdir(kflags.FLAGS.workdir)  # before the data source is read
  distribute.setup(kflags.FLAGS.strategy, lambda: pipeline.validate(config))
  start = time.time()
  outcomes = pipeline.run(config, kflags.FLAGS.workdir, force=kflags.FLAGS.force)
  if distribute.is_chief():
    print(report.pipeline_summary(kflags.FLAGS.workdir, outcomes, time.time() - start))


def entry_point():
  app.entry(main, "kdprune-pipeline")


if __name__ == "__main__":
  entry_point()

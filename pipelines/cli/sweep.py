"""``kdprune-sweep``: one teacher, many students, the Pareto front (``python -m pipelines.cli.sweep``).

See :mod:`pipelines.stages.sweep`.
"""

import os

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.export import pareto
from pipelines.runtime import distribute
from pipelines.stages import sweep


def main(argv):
  del argv
  base = kflags.pipeline_config_from_flags()
  config = kflags.sweep_config_from_flags()
  distribute.setup(kflags.FLAGS.strategy, lambda: sweep.validate(base, config))
  out = sweep.run(base, config, kflags.FLAGS.workdir, force=kflags.FLAGS.force)
  if distribute.is_chief():
    print()
    print(pareto.markdown(out))
    print("sweep -> %s" % os.path.join(out["workdir"], sweep.NAME))


def entry_point():
  app.entry(main, "kdprune-sweep")


if __name__ == "__main__":
  entry_point()

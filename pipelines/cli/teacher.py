"""``kdprune-teacher``: the teacher stage from the command line (``python -m pipelines.cli.teacher``).

See :mod:`pipelines.stages.teacher` for what it does and writes.
"""

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.stages import teacher


def main(argv):
  del argv
  app.run_stage(teacher.STAGE, kflags.teacher_config_from_flags())


def entry_point():
  app.entry(main, "kdprune-teacher")


if __name__ == "__main__":
  entry_point()

"""``kdprune-student``: the student stage from the command line (``python -m pipelines.cli.student``).

See :mod:`pipelines.stages.student` for what it does and writes.
"""

from pipelines.cli import app
from pipelines.cli import flags as kflags


def main(argv):
  del argv
  from pipelines.stages import student  # pylint: disable=g-import-not-at-top
  app.run_stage(student.STAGE, kflags.student_config_from_flags())


def entry_point():
  app.entry(main, "kdprune-student")


if __name__ == "__main__":
  entry_point()

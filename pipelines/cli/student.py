"""``kdprune-student``: the student stage from the command line (``python -m pipelines.cli.student``).

See :mod:`pipelines.stages.student` for what it does and writes.
"""

from pipelines.cli import app
from pipelines.cli import flags as kflags
from pipelines.stages import student


def main(argv):
  del argv
  app.run_stage(student.STAGE, kflags.student_config_from_flags())


def entry_point():
  app.entry(main, "kdprune-student")


if __name__ == "__main__":
  entry_point()

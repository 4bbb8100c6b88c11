"""What several benchmarks share: one teacher from the flags, then students that vary from it."""

import dataclasses
from typing import Callable, Dict, Iterable, Tuple

from absl import flags

from pipelines.cli import flags as kflags
from pipelines.runtime import execute as stage
from pipelines.stages import student, teacher

FLAGS = flags.FLAGS


def teacher_and_students(variants: Iterable[Tuple[str, Callable]]):
  """Trains (or reuses) the teacher of ``--workdir``, then one student per variant.

  ``variants`` are ``(name, change)``; ``change(base)`` returns the student
  config (the flags' config, ``base``) with its differences; the name is set
  here. Finished stages are reused unless ``--force``.

  Returns:
    ``(base student config, teacher config, {"teacher": metrics, name: metrics, ...})``.
  """
  workdir = FLAGS.workdir
  t_config = kflags.teacher_config_from_flags()
  t = stage.run_stage(teacher.STAGE, t_config, workdir)
  base = kflags.student_config_from_flags()
  results: Dict[str, dict] = {"teacher": t.entry["metrics"]}
  for name, change in variants:
    config = dataclasses.replace(change(base), name=name)
    outcome = stage.run_stage(student.STAGE, config, workdir, force=FLAGS.force)
    results[name] = outcome.entry["metrics"]
  return base, t_config, results


def with_distill(base, enabled: bool, **pruning):
  """``base`` with distillation on or off and the pruning fields in ``pruning`` replaced."""
  return dataclasses.replace(base, distill=dataclasses.replace(base.distill, enabled=enabled),
                             pruning=dataclasses.replace(base.pruning, **pruning))

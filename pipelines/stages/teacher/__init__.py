"""Teacher stage: train the large model the student will learn from.

Run it alone (it records itself in ``<workdir>/manifest.json`` like the
pipeline does)::

  kdprune-teacher --workdir=runs/demo                       # embedded digits, ~15 s
  kdprune-teacher --flagfile=launch/presets/mnist.cfg --workdir=runs/mnist

Writes ``<workdir>/teacher/``: ``model.keras`` (best epoch by
``--teacher_monitor``), ``metrics.json``, ``config.json``, ``metrics.jsonl``
and TensorBoard logs under ``tb/``.
"""

import os

from pipelines.config import TEACHER as NAME
from pipelines.config import TeacherConfig
from pipelines.data import sources
from pipelines.runtime import rundir
from pipelines.runtime.execute import Stage, lazy

__all__ = ["NAME", "STAGE", "TeacherConfig", "validate", "fingerprint_inputs", "run"]


_CHECKED_IMPORTS = {}  # (path, mtime, data) -> True: an imported teacher is loaded once to check


def validate(config: TeacherConfig) -> None:
  """Every check that needs no training; the data source is checked last. An imported teacher
  (``--teacher_path``) is loaded here (TensorFlow) to check it fits the data."""
  config.validate()
  source = sources.resolve(config.data)
  if config.path is None:
    sources.check_augment(config.data, config.train.augment, "--teacher_augment")
    return
  for path in config.paths:  # every imported teacher (several are averaged)
    key = (os.path.abspath(path), os.path.getmtime(path), source.input_shape, source.num_classes)
    if key not in _CHECKED_IMPORTS:
      from pipelines.train import teacher_import  # pylint: disable=g-import-not-at-top
      _, shape, units, _ = teacher_import.open_model(path, config.allow_unsafe)
      teacher_import.check_fits(path, shape, units, source.input_shape, source.num_classes,
                                config.data.regression)
      _CHECKED_IMPORTS[key] = True


def fingerprint_inputs(config: TeacherConfig, workdir: str = None) -> dict:
  """What decides the teacher's result: its resolved config and the data's identity (and, for an
  imported teacher, the content hash of its file: a changed file reruns the students)."""
  del workdir  # the teacher has no upstream
  inputs = {"config": config.resolved(), "data_source": config.data.source_identity()}
  if config.path is not None:
    inputs["teacher_file"] = rundir.content_hash(config.path)
  if config.more_paths:  # each further teacher's content too (one teacher keeps its fingerprint)
    inputs["more_teacher_files"] = [rundir.content_hash(p) for p in config.more_paths]
  return inputs


run = lazy("pipelines.stages.teacher.train")


STAGE = Stage(kind=NAME, config_type=TeacherConfig, validate=validate,
              fingerprint_inputs=fingerprint_inputs, run=run)

"""kdprune: distil a large TensorFlow teacher into a compact, pruned, int8 student.

From Python (see :mod:`pipelines.api` and the README's notebook example)::

  import pipelines
  result = pipelines.distill(my_tf_keras_teacher, train_ds, test_ds, final_sparsity=0.8)
  outcomes = pipelines.run_pipeline(pipelines.PipelineConfig(), "runs/demo")

The package is layered (checked by import-linter, see setup.cfg), top to bottom:

* ``api`` (this package's Python API) and ``cli`` (absl flags, console scripts);
* ``stages``: teacher, student, qat, export, pipeline, sweep; orchestration only;
* ``export`` (TFLite conversion and measurement, reports), ``train`` (distillation
  trainer, losses, callbacks, optimizers, backups), ``quantize`` (QAT), ``prune``
  (magnitude, dynamic, channels), ``runtime`` (distribution, run directory and
  manifest, upstream look-ups, stage execution), ``data`` (sources, tf.data);
* ``config``: the frozen config dataclasses, pure Python.

Model builders live in the top-level ``models`` package, which imports nothing
from here; Keras is imported in one place, :mod:`models.compat`. Flag parsing
and config validation never import TensorFlow, so a bad invocation fails in
about a second; importing this package does not import TensorFlow either.
"""

import os as _os

# tfmot needs Keras 2; this must hold before anything imports TensorFlow
# (models.compat sets it too, next to the one Keras import).
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.2.0"

_API = ("run_pipeline", "run_stage", "distill", "DistillResult")
_CONFIGS = ("PipelineConfig", "TeacherConfig", "StudentConfig", "QatConfig", "ExportConfig",
            "SweepConfig", "DataConfig", "TrainConfig", "DistillConfig", "PruningConfig",
            "ConfigError", "StageError")
__all__ = list(_API + _CONFIGS) + ["ModelSpec"]


def __getattr__(name):
  # Imported on first use, so that `import pipelines` stays light.
  if name in _API:
    from pipelines import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name in _CONFIGS:
    from pipelines import config  # pylint: disable=g-import-not-at-top
    return getattr(config, name)
  if name == "ModelSpec":
    from models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
    return ModelSpec
  raise AttributeError("module 'pipelines' has no attribute %r" % name)

"""Where a student comes from: a built-in family (tf_keras, or Keras 3 with ``--student_keras=3``),
a user's builder, or a user's model file (``--student_path``: its architecture, and its weights
if it was trained).

A ``--student_path`` file is a Keras 3 ``.keras`` archive (detected from its ``metadata.json``;
pruned by :mod:`pipelines.prune.keras3`) or a tf_keras ``.keras``/``.h5`` file (pruned by tfmot,
as a built student). Nested models are inlined into one graph with the same weights and a final
softmax is removed, as for a user's builder; the model must take the data's input shape and give
one output per class (per target): a one-line ConfigError otherwise (:func:`check_file`, run by
the stage's ``validate`` before any work).
"""

import os
from typing import Dict, Tuple

from models import files, flatten, heads
from models import keras3 as keras3_models
from models.compat import keras
from models.registry import check_model
from pipelines.config.errors import ConfigError
from pipelines.runtime import progress
from pipelines.train import distill

_CHECKED: Dict[Tuple, bool] = {}  # (path, mtime, shape, classes): a file is loaded once to check


def load_file(path: str, input_shape, num_classes: int, allow_unsafe: bool = False):
  """The student in ``path``, flat, on logits, checked against the data (a file whose loading
  runs Python stored in it only with ``allow_unsafe``: :mod:`models.files`)."""
  files.check_safe(path, "--student_path", allow_unsafe)
  if keras3_models.is_keras3_file(path):
    return keras3_models.load_student(path, input_shape, num_classes, allow_unsafe=allow_unsafe)
  what = "--student_path=%s" % path
  try:
    model = keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError("%s does not load as a tf_keras or Keras 3 model (%s: %s)" % (
        what, type(e).__name__, " ".join(str(e).split())[:300])) from None
  if isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False):
    model, _ = flatten.flatten(model, what)
    check_model(model, input_shape, num_classes, what)
    model, _ = heads.to_logits(model, what)
  else:
    check_model(model, input_shape, num_classes, what)
  return model


def check_file(path: str, input_shape, num_classes: int, allow_unsafe: bool = False) -> None:
  """Loads ``path`` once per process to refuse, before any work, a file that does not fit."""
  key = (os.path.abspath(path), os.path.getmtime(path), tuple(input_shape), int(num_classes))
  if key not in _CHECKED:
    load_file(path, input_shape, num_classes, allow_unsafe)
    _CHECKED[key] = True


def build(config, bundle):
  """The student ``config`` (a StudentConfig) describes, for ``bundle``'s data."""
  if config.path is not None:
    model = load_file(config.path, bundle.input_shape, bundle.num_classes, config.allow_unsafe)
    progress.say("[%s] student from %s: %s model, %d parameters" % (
        config.stage, config.path, "a Keras 3" if keras3_models.is_keras3(model) else "a tf_keras",
        model.count_params()))
    return model
  if config.keras == 3:
    return keras3_models.build_family(config.model, bundle.input_shape, bundle.num_classes,
                                      name="student")
  return distill.build_student(config, bundle)


def describe(config) -> str:
  """What the student is, for the stage's first line."""
  return os.path.basename(config.path) if config.path is not None else config.model.name

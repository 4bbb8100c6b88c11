"""Starting a built model from trained weights (``--student_weights``).

A ``.keras`` or ``.h5`` *model* file is loaded and its weights are copied over when every weight
has the built model's shape, in order; any other file (``.weights.h5``, an ``.h5`` of weights
alone, a TF checkpoint prefix) goes to ``model.load_weights``. A file that does not fit is refused
with one line that names the first weight that differs.
"""

import os

from models import files
from models.compat import keras
from models.errors import ConfigError


def _shape(w):
  return tuple(int(d) for d in w.shape)


def _load_model(path, allow_unsafe: bool):
  if path.endswith(".weights.h5") or not path.endswith((".keras", ".h5")):
    return None
  try:
    return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
  except (ValueError, OSError, TypeError, KeyError):
    return None  # an .h5 of weights alone: load_weights decides


def load_start_weights(model, path: str, what: str = "--student_weights",
                       allow_unsafe: bool = False):
  """Sets ``model``'s weights from ``path``; raises ConfigError (one line) if they do not fit, or
  if loading the file would run Python stored in it and not ``allow_unsafe``
  (:mod:`models.files`)."""
  if not os.path.exists(path) and not os.path.exists(path + ".index"):
    raise ConfigError("%s=%s: no such file or directory" % (what, path))
  files.check_safe(path, what, allow_unsafe)
  source = _load_model(path, allow_unsafe)
  if source is not None:
    got, want = source.weights, model.weights
    for mine, theirs in zip(want, got):
      if _shape(mine) != _shape(theirs):
        raise ConfigError("%s=%s does not fit the student: %s has shape %s, the file's %s has %s"
                          % (what, path, mine.name, _shape(mine), theirs.name, _shape(theirs)))
    if len(got) != len(want):
      raise ConfigError("%s=%s does not fit the student: %d weights in the file, %d in the "
                        "student" % (what, path, len(got), len(want)))
    model.set_weights(source.get_weights())
    return model
  try:
    model.load_weights(path)
  except (ValueError, OSError, KeyError, TypeError) as e:
    raise ConfigError("%s=%s does not fit the student: %s" % (
        what, path, " ".join(str(e).split())[:300])) from None
  return model

"""Model files from users are code: what a file would run when loaded, found before loading it.

A ``Lambda`` layer stores Python: in a ``.keras`` archive its function's bytecode (Keras' own
``safe_mode`` refuses it, for ``.keras`` files only), in a legacy ``.h5`` file its marshalled
bytecode, which tf_keras turns back into a function and calls while it rebuilds the model, with
no guard. Every file kdprune loads from a user (``--teacher_path``, ``--student_path``,
``--student_weights``) is read here first, without TensorFlow: a file whose model holds such a
layer is refused in one line unless the user passes ``--allow_unsafe_deserialization``. A SavedModel directory is run
through ``tf.saved_model.load``, which rebuilds no Python, and holds nothing to check here.
"""

import json
import os
import zipfile
from typing import List, Optional

import h5py

from models.errors import ConfigError

# Serialized objects whose loading runs Python from the file.
CODE_CLASSES = ("Lambda", "__lambda__")

UNSAFE_FLAG = "--allow_unsafe_deserialization"


def _model_config(path: str) -> Optional[dict]:
  """The architecture stored in the file at ``path`` (a ``.keras`` archive's config.json, an
  ``.h5`` file's ``model_config``), or None for a file that stores none."""
  if os.path.isdir(path):
    return None
  if zipfile.is_zipfile(path):
    try:
      with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
      return None
  try:
    with h5py.File(path, "r") as f:
      text = f.attrs.get("model_config")
  except OSError:
    return None  # not an HDF5 file: the loader says what it is
  if text is None:
    return None  # weights alone
  try:
    return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
  except ValueError:
    return None


def code_objects(path: str) -> List[str]:
  """The names of the objects of the model file at ``path`` whose loading runs Python stored in
  the file (``[]`` when there are none, or the file stores no architecture)."""
  found = []

  def walk(node):
    if isinstance(node, dict):
      if node.get("class_name") in CODE_CLASSES:
        inner = node.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        found.append("%s %s" % (node["class_name"], name) if name else node["class_name"])
      for value in node.values():
        walk(value)
    elif isinstance(node, list):
      for value in node:
        walk(value)

  walk(_model_config(path))
  return found


def check_safe(path: str, flag: str, allow_unsafe: bool = False) -> None:
  """Refuses, in one line, a model file whose loading would run Python stored in it (unless
  ``allow_unsafe``: the user trusts the file)."""
  if allow_unsafe:
    return
  found = code_objects(path)
  if found:
    raise ConfigError(
        "%s=%s holds Python code that runs when the file is loaded (%s); kdprune loads it only "
        "with %s, if you trust the file (or rebuild the model without Lambda layers)" % (
            flag, path, ", ".join(sorted(set(found))[:5]), UNSAFE_FLAG))

"""Serving an export from its files alone: raw inputs -> predictions (``kdprune-predict``).

An export folder holds the int8 ``.tflite`` and ``preprocessing.json`` (written by the export
stage from the run's :class:`~pipelines.data.bundle.DatasetBundle`): the raw input's shape and
dtype, the resizing, the normalisation as explicit numbers, the CSV feature columns and the class
names. Every exported ``.tflite`` also carries that record as the metadata entry
``kdprune_preprocessing``, read when the file travels alone. :func:`predict` reads raw inputs (an
``.npz`` of raw arrays, a CSV with the training feature columns, an image file or a folder of
images), prepares them exactly as training did (the same TensorFlow ops, so the inputs are
bit-identical to the report's), runs the ``.tflite`` and writes one CSV row per input. Every
problem is a one-line :class:`ConfigError` raised before anything is written.
"""

import csv
import io
import json
import os
import sys
from typing import List, Tuple

import numpy as np

from models.compat import tf
from pipelines.config import PREPROCESSING_FILE, PREPROCESSING_METADATA, PRODUCT
from pipelines.config.errors import ConfigError
from pipelines.data import bundle
from pipelines.data.base import first_line
from pipelines.export import tflite as tflite_tools
from pipelines.runtime import rundir

PREPROCESSING = PREPROCESSING_FILE
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
NPZ_KEYS = ("x", "x_test")


def resolve_model(path: str) -> Tuple[str, dict]:
  """``--model`` (a ``.tflite`` file or an export folder) -> ``(tflite path, preprocessing)``."""
  flag = "--model=%s" % path
  if os.path.isdir(path):
    folder, model = path, os.path.join(path, PRODUCT + ".tflite")
    if not os.path.isfile(model):
      raise ConfigError("%s: the folder holds no %s.tflite (pass the .tflite file itself)" % (
          flag, PRODUCT))
  elif os.path.isfile(path):
    if not path.endswith(".tflite"):
      raise ConfigError("%s: expected a .tflite file or an export folder" % flag)
    folder, model = os.path.dirname(os.path.abspath(path)), path
  else:
    raise ConfigError("%s: no such file or folder" % flag)
  spec_path = where = os.path.join(folder, PREPROCESSING)
  try:
    if os.path.isfile(spec_path):
      with open(spec_path) as f:
        spec = json.load(f)
    else:  # a .tflite alone: the export embeds the same record as metadata
      with open(model, "rb") as f:
        payload = tflite_tools.read_metadata(f.read(), PREPROCESSING_METADATA)
      if payload is None:
        raise ConfigError("%s: no %s beside the model and no %r metadata in it (exports from "
                          "kdprune-export have both, unless --noembed_preprocessing; rerun "
                          "kdprune-export --force on older runs)" % (
                              flag, PREPROCESSING, PREPROCESSING_METADATA))
      spec, where = json.loads(payload.decode("utf-8")), "its %r metadata" % PREPROCESSING_METADATA
    missing = [k for k in ("task", "input", "normalization") if k not in spec]
    if missing or "shape" not in spec["input"] or "kind" not in spec["normalization"]:
      raise ValueError("missing %s" % ", ".join(missing or ["input.shape/normalization.kind"]))
  except ConfigError:
    raise
  except Exception as e:  # OSError, ValueError (JSON), KeyError, TypeError, a broken flatbuffer
    raise ConfigError("%s: %s is not a kdprune preprocessing record (%s)" % (
        flag, where, first_line(e))) from None
  return model, spec


def read_inputs(path: str, spec: dict) -> Tuple[List[str], np.ndarray]:
  """Raw inputs of ``--input`` -> ``(names, array [N, *input shape])``, in the raw dtype's form."""
  flag = "--input=%s" % path
  if os.path.isdir(path):
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise ConfigError("%s: the folder holds no image (%s)" % (flag, ", ".join(IMAGE_EXTENSIONS)))
    return files, np.stack([_image(os.path.join(path, f), spec, flag) for f in files])
  if not os.path.isfile(path):
    raise ConfigError("%s: no such file or folder" % flag)
  lower = path.lower()
  if lower.endswith(".npz"):
    x = _npz(path, spec, flag)
  elif lower.endswith(".csv"):
    x = _csv(path, spec, flag)
  elif lower.endswith(IMAGE_EXTENSIONS):
    return [os.path.basename(path)], _image(path, spec, flag)[None]
  else:
    raise ConfigError("%s: expected an .npz, a .csv, an image (%s) or a folder of images" % (
        flag, ", ".join(IMAGE_EXTENSIONS)))
  return [str(i) for i in range(len(x))], x


def _shape(spec) -> Tuple[int, ...]:
  return tuple(int(d) for d in spec["input"]["shape"])


def _npz(path: str, spec: dict, flag: str) -> np.ndarray:
  try:
    with np.load(path, allow_pickle=False) as npz:
      key = next((k for k in NPZ_KEYS if k in npz.files), None)
      if key is None:
        raise ConfigError("%s: needs an array named %s (found: %s)" % (
            flag, " or ".join(NPZ_KEYS), ", ".join(sorted(npz.files)) or "none"))
      x = npz[key]
  except ConfigError:
    raise
  except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError...
    raise ConfigError("%s: not a readable .npz file (%s)" % (flag, first_line(e))) from None
  shape = _shape(spec)
  if x.ndim == len(shape) and len(shape) == 3 and shape[-1] == 1:
    x = x[..., None]  # [N, H, W] greyscale, as training reads it
  if x.dtype.kind not in "biuf":
    raise ConfigError("%s: %s has dtype %s; expected numbers" % (flag, key, x.dtype))
  if len(x) == 0:
    raise ConfigError("%s: %s is empty" % (flag, key))
  if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
    raise ConfigError("%s: %s contains NaN or infinite values" % (flag, key))
  x = _as_raw_dtype(x, spec, "%s: %s" % (flag, key))
  if (x.ndim == 4 and len(shape) == 3 and spec.get("resize") and x.shape[-1] == shape[-1]
      and tuple(x.shape[1:3]) != shape[:2]):
    x = _resized(x, shape[:2])  # as training resized --image_size data
  if x.ndim < 2 or tuple(x.shape[1:]) != shape:
    raise ConfigError("%s: %s has shape %s; the model takes [N, %s]" % (
        flag, key, tuple(x.shape), ", ".join(str(d) for d in shape)))
  return x


def _as_raw_dtype(x: np.ndarray, spec: dict, what: str) -> np.ndarray:
  """``x`` in the raw dtype training read (``preprocessing.json``'s ``input.dtype``), or a
  ConfigError: a model trained on raw integers (uint8 pixels) normalises them itself, so floats
  (already normalised ones above all: they would be divided by 255 again) and values beyond the
  dtype's range are refused, not converted silently."""
  want = np.dtype(spec["input"].get("dtype", "float32"))
  if want.kind not in "iu":
    return x.astype(want) if x.dtype != want else x
  info = np.iinfo(want)
  lo, hi = x.min(), x.max()
  if x.dtype.kind == "f":
    looks = (" (they look normalised already: the model scales its raw inputs itself)"
             if 0 <= lo and hi <= 1 else "")
    raise ConfigError("%s holds %s values in [%g, %g]%s; the model was trained on raw %s values "
                      "(%d to %d): pass those, as integers" % (
                          what, x.dtype, lo, hi, looks, want, info.min, info.max))
  if lo < info.min or hi > info.max:
    raise ConfigError("%s holds values in [%d, %d]; the model was trained on raw %s values (%d to "
                      "%d)" % (what, lo, hi, want, info.min, info.max))
  return x.astype(want)


def _resized(images: np.ndarray, size) -> np.ndarray:
  """``images`` (raw integers) resized to ``size`` as training resized ``--image_size`` data."""
  return bundle.resize_raw(images, tuple(size), images.dtype).numpy()


def _csv(path: str, spec: dict, flag: str) -> np.ndarray:
  columns = spec.get("feature_columns")
  if columns is None:
    raise ConfigError("%s: the model was not trained on a CSV (no feature columns in %s); "
                      "pass an .npz" % (flag, PREPROCESSING))
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise ConfigError("%s: not a readable CSV file (%s)" % (flag, first_line(e))) from None
  if len(rows) < 2:
    raise ConfigError("%s: needs a header row and at least one data row" % flag)
  header = [c.strip() for c in rows[0]]
  missing = [c for c in columns if c not in header]
  if missing:
    raise ConfigError("%s: missing feature column(s) %s (the model takes: %s)" % (
        flag, ", ".join(missing), ", ".join(columns)))
  where = [header.index(c) for c in columns]
  x = np.empty((len(rows) - 1, len(columns)), dtype=np.float64)
  for i, row in enumerate(rows[1:]):
    if len(row) != len(header):
      raise ConfigError("%s: row %d has %d cells but the header has %d columns" % (
          flag, i + 2, len(row), len(header)))
    for j, k in enumerate(where):
      try:
        x[i, j] = float(row[k])
      except ValueError:
        raise ConfigError("%s: row %d, column %r: %r is not a number" % (
            flag, i + 2, columns[j], row[k].strip())) from None
  if not np.all(np.isfinite(x)):
    i, j = np.argwhere(~np.isfinite(x))[0]
    raise ConfigError("%s: row %d, column %r is NaN or infinite" % (flag, i + 2, columns[j]))
  return x.astype(np.float32)  # as training read the table


def _image(path: str, spec: dict, flag: str) -> np.ndarray:
  """One image file, decoded, channels adapted and resized to the model's input as training did."""
  shape = _shape(spec)
  if len(shape) != 3:
    raise ConfigError("%s: the model takes feature vectors of shape %s, not images" % (
        flag, shape))
  dtype = spec["input"]["dtype"]
  if dtype != "uint8":
    raise ConfigError("%s: the model was trained on %s arrays, not uint8 images; pass an .npz" % (
        flag, dtype))
  want = shape[2]
  if want not in (1, 3, 4):
    raise ConfigError("%s: the model takes images of %d channels; only 1, 3 or 4 decode from an "
                      "image file" % (flag, want))
  try:
    # Decoded to the model's channels by the decoder itself, as training decoded image folders
    # and TFRecords (grey from colour by the decoder's own weights, alpha dropped).
    image = tf.io.decode_image(tf.io.read_file(path), channels=want, expand_animations=False)
  except Exception as e:  # tf.errors.InvalidArgumentError and the like
    raise ConfigError("%s: %s is not a readable image (%s)" % (
        flag, os.path.basename(path), first_line(e))) from None
  image = image.numpy()
  if tuple(image.shape[:2]) != shape[:2]:
    image = _resized(image[None], shape[:2])[0]  # as the bundle resizes --image_size datasets
  return image


RANGE_SLACK = 0.1  # inputs beyond training's range by more than this share of it are flagged


def range_warning(raw: np.ndarray, spec: dict) -> str:
  """A sentence when the raw inputs lie well beyond the range training saw (recorded as
  ``input.range`` for array sources), else ''. Such inputs are usually in other units or
  already scaled, and the model's answers for them mean little."""
  recorded = spec["input"].get("range")
  if not recorded or raw.size == 0:
    return ""
  lo, hi = float(recorded[0]), float(recorded[1])
  slack = RANGE_SLACK * max(hi - lo, 1e-12)
  got_lo, got_hi = float(np.min(raw)), float(np.max(raw))
  if got_lo >= lo - slack and got_hi <= hi + slack:
    return ""
  return ("the inputs span [%.6g, %.6g] but training's span [%.6g, %.6g]: check their units and "
          "scaling (kdprune normalises raw inputs itself); predictions beyond the training range "
          "mean little" % (got_lo, got_hi, lo, hi))


def normalize(x: np.ndarray, spec: dict) -> np.ndarray:
  """Raw inputs -> the model's float32 inputs, with the ops training used."""
  fn = bundle.normalizer(spec["normalization"])
  return fn(tf.constant(x), None)[0].numpy()


def predict(model: str, inputs: str, output: str = "", batch_size: int = 256) -> dict:
  """Runs ``model`` (see :func:`resolve_model`) on the raw ``inputs``; writes ``output`` (CSV;
  standard output when empty).

  Columns: ``input`` (file name or row index), ``prediction`` (class id, or the value; one
  ``prediction_<i>`` per target for several targets) and, for classification, ``label`` (the
  class name) and ``probability`` (softmax of the outputs at the predicted class). Returns a
  summary (rows, the output path, the model). Nothing is written when anything fails.
  """
  if batch_size < 1:
    raise ConfigError("--batch_size=%d must be >= 1" % batch_size)
  if output:
    out_dir = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(out_dir):
      raise ConfigError("--output=%s: the folder %s does not exist" % (output, out_dir))
  model_path, spec = resolve_model(model)
  names, raw = read_inputs(inputs, spec)
  warning = range_warning(raw, spec)
  if warning:
    sys.stderr.write("kdprune-predict: warning: %s\n" % warning)
  x = normalize(raw, spec)
  with open(model_path, "rb") as f:
    runner = tflite_tools.Runner(f.read(), num_threads=2)
  try:
    outputs = np.concatenate([runner(x[i:i + batch_size]).reshape(len(x[i:i + batch_size]), -1)
                              for i in range(0, len(x), batch_size)])
  except (ValueError, RuntimeError) as e:
    raise ConfigError("--model=%s: cannot run on these inputs (%s)" % (model, first_line(e))) \
        from None
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  if spec["task"] == "regression":
    k = outputs.shape[1]
    writer.writerow(["input"] + (["prediction"] if k == 1 else
                                 ["prediction_%d" % i for i in range(k)]))
    for name, row in zip(names, outputs):
      writer.writerow([name] + ["%.9g" % v for v in row])
  else:
    class_names = spec.get("class_names") or [str(i) for i in range(outputs.shape[1])]
    logits = outputs.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = np.argmax(outputs, -1)
    writer.writerow(["input", "prediction", "label", "probability"])
    for name, p, row in zip(names, pred, probs):
      label = class_names[p] if p < len(class_names) else str(p)
      writer.writerow([name, int(p), label, "%.6g" % row[p]])
  if output:
    rundir.atomic_write(output, text.getvalue())
  else:
    sys.stdout.write(text.getvalue())
    sys.stdout.flush()
  return {"rows": len(names), "output": output or "-", "model": model_path, "task": spec["task"]}


def read_predictions(path: str) -> List[dict]:
  """The rows of a ``kdprune-predict`` CSV (for tests and notebooks)."""
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


__all__ = ["PREPROCESSING", "resolve_model", "read_inputs", "normalize", "predict",
           "read_predictions"]

"""``--dataset=npz:FILE``: user arrays, the checks every array source passes, and the tf.data
builder of the array kinds (npz, csv, synthetic). Checks import no TensorFlow."""

import os
import struct
import zipfile
from typing import Optional

import numpy as np

from pipelines.config.data import NPZ_PREFIX, DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.base import Read, Source, SourceKind, carve_indices, first_line

_BYTES_PER_READ = 1 << 20


class Arrays(SourceKind):
  """A ``.npz`` of ``x_<split>`` / ``y_<split>`` arrays, and the base of the other array kinds."""

  name, prefix, usage = "npz", NPZ_PREFIX, "npz:/path/file.npz"

  def resolve(self, config: DataConfig) -> Source:
    arrays = load_npz_arrays(config.npz_path, config.num_classes, config.task)
    if config.image_size is not None:
      raise ConfigError("--image_size is for TFDS image datasets; resize the arrays of %s instead"
                        % config.npz_path)
    return self.source(arrays)

  def source(self, arrays: dict) -> Source:
    x = arrays["x_train"]
    return Source(kind=self, input_shape=tuple(int(d) for d in x.shape[1:]),
                  num_classes=int(arrays["num_classes"]), input_dtype=x.dtype, payload=arrays)

  def split_sizes(self, source: Source) -> dict:
    a = source.payload
    sizes = {"train": len(a["x_train"]), "test": len(a["x_test"])}
    if "x_val" in a:
      sizes["validation"] = len(a["x_val"])
    return sizes

  def read(self, source: Source, config: DataConfig) -> Read:
    """The arrays are never copied whole: each split is read a block of rows at a time
    (:func:`rows`), so a memory-mapped ``.npz`` (:func:`mapped_npz`) stays on disk."""
    a = source.payload
    splits = {"test": rows(a["x_test"], a["y_test"])}
    if "x_val" in a:
      splits["validation"] = rows(a["x_val"], a["y_val"])
    return Read(splits, self.split_sizes(source), validation_source="x_val/y_val",
                pick=lambda index: rows(a["x_train"], a["y_train"], index), x_train=a["x_train"])


def rows(x: np.ndarray, y: np.ndarray, index: Optional[np.ndarray] = None):
  """The examples ``(x[i], y[i])`` for ``i`` in ``index`` (all rows when None), in order, read
  from the arrays about ``_BYTES_PER_READ`` at a time: a memory-mapped array is read page by page
  and never copied whole (``from_tensor_slices`` would copy it into one tensor)."""
  from models.compat import plain, tf  # pylint: disable=g-import-not-at-top  (reading, not checks)
  index = np.arange(len(x), dtype=np.int64) if index is None else np.asarray(index, np.int64)
  row_shape, target_shape = tuple(x.shape[1:]), tuple(y.shape[1:])

  def read(i):
    if len(i) and i[-1] - i[0] == len(i) - 1:  # a contiguous block: a slice, no gather
      return np.ascontiguousarray(x[i[0]:i[-1] + 1]), np.ascontiguousarray(y[i[0]:i[-1] + 1])
    return np.asarray(x[i]), np.asarray(y[i])

  def load(i):
    xs, ys = tf.numpy_function(read, [i], [tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)],
                               stateful=False)
    return tf.ensure_shape(xs, (None,) + row_shape), tf.ensure_shape(ys, (None,) + target_shape)
  per_read = max(1, min(4096, _BYTES_PER_READ // max(1, x.itemsize * int(np.prod(row_shape)))))
  ds = tf.data.Dataset.from_tensor_slices(index).batch(per_read)
  return ds.map(plain(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def load_npz_arrays(path: str, num_classes: Optional[int] = None,
                    task: str = "classification") -> dict:
  """Reads and checks a user ``.npz``; returns a dict of arrays plus ``num_classes``.

  Required keys: ``x_train``, ``y_train``, ``x_test``, ``y_test``; optional
  ``x_val`` and ``y_val`` (both or neither). ``x`` arrays are numeric with the
  same per-example shape (``[N, H, W]`` is read as greyscale ``[N, H, W, 1]``);
  ``y`` arrays hold one integer class id in ``[0, num_classes)`` per example,
  or for ``task="regression"`` finite real targets, ``[N]`` or ``[N, targets]``
  (``num_classes`` is then the number of targets: the model's outputs).
  """
  flag = "--dataset=npz:%s" % path
  if not os.path.exists(path):
    raise ConfigError("%s: no such file" % flag)
  try:
    arrays = mapped_npz(path)
  except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError...
    raise ConfigError("%s: not a readable .npz file (%s)" % (flag, first_line(e))) from None

  required = ["x_train", "y_train", "x_test", "y_test"]
  missing = [k for k in required if k not in arrays]
  if missing:
    raise ConfigError("%s: missing key(s) %s (found: %s)" % (
        flag, ", ".join(missing), ", ".join(sorted(arrays)) or "none"))
  if ("x_val" in arrays) != ("y_val" in arrays):
    raise ConfigError("%s: x_val and y_val must be given together" % flag)
  return check_arrays(flag, arrays, num_classes, task)


def mapped_npz(path: str) -> dict:
  """The arrays of an ``.npz``, memory-mapped where the file allows it, never copied whole.

  ``np.load(path, mmap_mode="r")`` ignores ``mmap_mode`` for ``.npz`` files (their members are
  zip entries), so each member saved uncompressed (``np.savez``: the zip entry is *stored*) is
  mapped here at its offset in the file: a ``np.memmap`` whose pages are read when used and
  can be dropped by the OS, so memory does not grow with the file. A compressed member
  (``np.savez_compressed``) cannot be mapped: it is decompressed into memory, once; save large
  data with ``np.savez`` (or as TFRecords) to keep it on disk.
  """
  arrays = {}
  with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
    for info in zf.infolist():
      if not info.filename.endswith(".npy"):
        continue
      key = info.filename[:-len(".npy")]
      if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as member:
          arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
        continue
      f.seek(info.header_offset)
      local = f.read(30)  # the local file header: its name and extra field lengths at 26
      if local[:4] != b"PK\x03\x04":
        raise ValueError("member %s has no local header" % info.filename)
      name_len, extra_len = struct.unpack("<HH", local[26:30])
      f.seek(info.header_offset + 30 + name_len + extra_len)
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                     np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read_header(f)
      if dtype.hasobject:
        raise ValueError("member %s holds Python objects (pickled), not numbers" % info.filename)
      if int(np.prod(shape)) == 0:
        arrays[key] = np.zeros(shape, dtype)
        continue
      arrays[key] = np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                              order="F" if fortran else "C")
  return arrays


def all_finite(x: np.ndarray, rows: int = 4096) -> bool:
  """``np.all(np.isfinite(x))``, a block of rows at a time (no copy of a mapped array)."""
  return all(bool(np.all(np.isfinite(x[i:i + rows]))) for i in range(0, len(x), rows))


def check_arrays(flag: str, arrays: dict, num_classes: Optional[int] = None,
                 task: str = "classification") -> dict:
  """Checks the ``x_<split>`` / ``y_<split>`` arrays of a source (see :func:`load_npz_arrays`).

  Returns the checked arrays (labels as int32, regression targets as float32
  ``[N, targets]``) plus ``num_classes``; raises a ConfigError starting with ``flag``.
  """
  regression = task == "regression"
  splits = ["train", "test"] + (["val"] if "x_val" in arrays else [])
  feature_shape = target_shape = None
  out = {}
  for s in splits:
    x, y = arrays["x_" + s], arrays["y_" + s]
    if x.dtype.kind not in "biuf":
      raise ConfigError("%s: x_%s has dtype %s; expected numbers" % (flag, s, x.dtype))
    if x.ndim < 2:
      raise ConfigError("%s: x_%s has shape %s; expected [examples, features...]" % (
          flag, s, x.shape))
    if len(x) == 0:
      raise ConfigError("%s: x_%s is empty" % (flag, s))
    if regression:
      if y.ndim == 1:
        y = y[:, None]
      if y.ndim != 2:
        raise ConfigError("%s: y_%s has shape %s; expected one target [N] or several [N, "
                          "targets] per example" % (flag, s, y.shape))
    elif y.ndim == 2 and y.shape[1] == 1:
      y = y[:, 0]
    if not regression and y.ndim != 1:
      raise ConfigError("%s: y_%s has shape %s; expected one class id per example" % (
          flag, s, y.shape))
    if len(y) != len(x):
      raise ConfigError("%s: x_%s has %d examples but y_%s has %d" % (flag, s, len(x), s, len(y)))
    if x.ndim == 3:  # [N, H, W] greyscale images -> [N, H, W, 1]
      x = x[..., None]
    if feature_shape is None:
      feature_shape = x.shape[1:]
    elif x.shape[1:] != feature_shape:
      raise ConfigError("%s: x_%s examples have shape %s but x_train's have %s" % (
          flag, s, x.shape[1:], feature_shape))
    if x.dtype.kind == "f" and not all_finite(x):
      raise ConfigError("%s: x_%s contains NaN or infinite values" % (flag, s))
    if regression:
      if y.dtype.kind not in "biuf":
        raise ConfigError("%s: y_%s has dtype %s; expected real-valued targets" % (
            flag, s, y.dtype))
      if not np.all(np.isfinite(y)):
        raise ConfigError("%s: y_%s contains NaN or infinite targets" % (flag, s))
      if target_shape is None:
        target_shape = y.shape[1:]
      elif y.shape[1:] != target_shape:
        raise ConfigError("%s: y_%s has %d targets per example but y_train has %d" % (
            flag, s, y.shape[1], target_shape[0]))
      out["x_" + s], out["y_" + s] = x, y.astype(np.float32)
      continue
    if y.dtype.kind not in "biuf":
      raise ConfigError("%s: y_%s has dtype %s; expected integer class ids" % (flag, s, y.dtype))
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
      raise ConfigError("%s: y_%s holds non-integer values; expected class ids (for real-valued "
                        "targets pass --task=regression)" % (flag, s))
    if y.min() < 0:
      raise ConfigError("%s: y_%s has label %d; labels must be >= 0" % (flag, s, int(y.min())))
    out["x_" + s], out["y_" + s] = x, y.astype(np.int32)

  if regression:
    out["num_classes"] = int(target_shape[0])
    return out
  max_label = max(int(out["y_" + s].max()) for s in splits)
  if num_classes is None:
    num_classes = max(2, max_label + 1)
  elif max_label >= num_classes:
    worst = max(splits, key=lambda s: int(out["y_" + s].max()))
    raise ConfigError("%s: y_%s has label %d, out of range for --num_classes=%d" % (
        flag, worst, max_label, num_classes))
  out["num_classes"] = num_classes
  return out


def split_table(x: np.ndarray, y: np.ndarray, config: DataConfig, flag: str) -> dict:
  """Train / test arrays of a single table: ``test_fraction`` held out by a permutation seeded
  with ``--seed`` (validation is carved from train later, as for any source)."""
  if len(x) < 3:
    raise ConfigError("%s: %d rows; need at least 3 (train, validation, test)" % (flag, len(x)))
  train_idx, test_idx = carve_indices(len(x), config.test_fraction, config.seed)
  return {"x_train": x[train_idx], "y_train": y[train_idx],
          "x_test": x[test_idx], "y_test": y[test_idx]}


NPZ = Arrays()

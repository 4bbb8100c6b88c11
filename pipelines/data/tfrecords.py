"""``--dataset=tfrecord:DIR``: ``DIR/train*``, ``DIR/test*`` (and ``DIR/validation*``) files of
``tf.train.Example`` records.

Two forms: images with the TF-slim / Model Garden keys (``image/encoded``: PNG/JPEG bytes,
``image/class/label``: int64; ``--tfrecord_image_key`` / ``--tfrecord_label_key`` rename them),
or tabular records with a float feature vector (``--tfrecord_features_key``, default
``features``) and the label. Before any work the files are found and their records counted by
walking the TFRecord framing (length fields only: no decoding, so a truncated file is named
at once), and the first record is parsed to check the keys (the error names the keys found) and
to read the input shape (the one check that imports TensorFlow). :meth:`TFRecords.read` reads
the files with parallel, deterministic interleaving; under multi-worker training the training
files are sharded by file when there are at least as many files as workers.
"""

import glob
import json
import os
import struct
from typing import Dict, List

import numpy as np

from pipelines.config.data import TFRECORD_PREFIX, DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.base import Read, Source, SourceKind

ROLES = ("train", "validation", "test")


def count_records(path: str) -> int:
  """Records in a TFRecord file, from its framing (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
  count, size = 0, os.path.getsize(path)
  with open(path, "rb") as f:
    offset = 0
    while offset < size:
      head = f.read(8)
      if len(head) < 8:
        raise ConfigError("--dataset=tfrecord: %s is truncated (a record header is cut at byte %d)"
                          % (path, offset))
      (length,) = struct.unpack("<Q", head)
      offset += 12 + length + 4
      if offset > size:
        raise ConfigError("--dataset=tfrecord: %s is truncated (record %d needs %d bytes, the "
                          "file ends first)" % (path, count + 1, length))
      f.seek(offset)
      count += 1
  return count


def _first_record(path: str) -> bytes:
  with open(path, "rb") as f:
    (length,) = struct.unpack("<Q", f.read(8))
    f.read(4)
    return f.read(length)


def find_files(root: str) -> Dict[str, List[str]]:
  if not os.path.isdir(root):
    raise ConfigError("--dataset=tfrecord:%s: no such directory" % root)
  files = {role: sorted(p for p in glob.glob(os.path.join(root, role + "*")) if os.path.isfile(p))
           for role in ROLES}
  for role in ("train", "test"):
    if not files[role]:
      raise ConfigError("--dataset=tfrecord:%s: no %s* files (found: %s)" % (
          root, role, ", ".join(sorted(os.listdir(root))) or "nothing"))
  return {role: paths for role, paths in files.items() if paths}


def _feature_keys(example) -> Dict[str, str]:
  return {key: feature.WhichOneof("kind") for key, feature in example.features.feature.items()}


class TFRecords(SourceKind):
  """``tf.train.Example`` files per split, of images or of feature vectors."""

  name, prefix, usage = "tfrecord", TFRECORD_PREFIX, "tfrecord:/folder"

  def resolve(self, config: DataConfig) -> Source:
    """Files, record counts, the record form and the input shape; one-line errors."""
    from models.compat import tf  # pylint: disable=g-import-not-at-top  (parsing the first record)
    root = config.tfrecord_path
    files = find_files(root)
    counts = {role: sum(count_records(p) for p in paths) for role, paths in files.items()}
    for role, n in counts.items():
      if n == 0:
        raise ConfigError("--dataset=tfrecord:%s: the %s files hold no records" % (root, role))
    first = files["train"][0]
    try:
      example = tf.train.Example.FromString(_first_record(first))
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError("--dataset=tfrecord: %s does not hold tf.train.Example records (%s)" % (
          first, " ".join(str(e).split())[:120])) from None
    keys = _feature_keys(example)
    found = ", ".join("%s (%s)" % kv for kv in sorted(keys.items()))
    label_key = config.tfrecord_label_key
    if label_key not in keys:
      raise ConfigError("--dataset=tfrecord: %s has no label %r (--tfrecord_label_key); its "
                        "records hold %s" % (first, label_key, found))
    if config.tfrecord_image_key in keys:
      form = "image"
      encoded = example.features.feature[config.tfrecord_image_key].bytes_list.value[0]
      try:
        image = tf.io.decode_image(encoded, expand_animations=False).numpy()
      except Exception:  # pylint: disable=broad-except
        raise ConfigError("--dataset=tfrecord: the first %r of %s is not a PNG/JPEG/BMP/GIF "
                          "image" % (config.tfrecord_image_key, first)) from None
      shape = image.shape if config.image_size is None else (
          int(config.image_size[0]), int(config.image_size[1]), image.shape[2])
      dtype = np.dtype(np.uint8)
    elif config.tfrecord_features_key in keys:
      form = "features"
      shape = (len(example.features.feature[config.tfrecord_features_key].float_list.value),)
      dtype = np.dtype(np.float32)
      if config.image_size is not None:
        raise ConfigError("--image_size is for image records; %s holds feature vectors" % first)
    else:
      raise ConfigError("--dataset=tfrecord: %s has neither image %r (--tfrecord_image_key) nor "
                        "features %r (--tfrecord_features_key); its records hold %s" % (
                            first, config.tfrecord_image_key, config.tfrecord_features_key,
                            found))
    if config.regression:
      num_classes = 1
    elif config.num_classes is None:
      raise ConfigError("--dataset=tfrecord:%s needs --num_classes (records do not say how many "
                        "classes there are)" % root)
    else:
      num_classes = int(config.num_classes)
    return Source(kind=self, input_shape=tuple(int(d) for d in shape), num_classes=num_classes,
                  input_dtype=dtype, payload={"files": files, "counts": counts, "form": form,
                                              "label_dtype": keys[label_key]})

  def split_sizes(self, source: Source) -> dict:
    return dict(source.payload["counts"])

  def read(self, source: Source, config: DataConfig) -> Read:
    """The files of each split interleaved in parallel (deterministic order, so cached teacher
    outputs stay with their examples), each record parsed and decoded."""
    from models.compat import plain, tf  # pylint: disable=g-import-not-at-top  (reading)
    files, form, shape = source.payload["files"], source.payload["form"], source.input_shape
    image_key, label_key = config.tfrecord_image_key, config.tfrecord_label_key
    features_key = config.tfrecord_features_key
    label_type = tf.float32 if source.payload["label_dtype"] == "float_list" else tf.int64
    spec = {label_key: tf.io.FixedLenFeature([], label_type)}
    if form == "image":
      spec[image_key] = tf.io.FixedLenFeature([], tf.string)
    else:
      spec[features_key] = tf.io.FixedLenFeature(list(shape), tf.float32)

    def parse(record):
      ex = tf.io.parse_single_example(record, spec)
      label = ex[label_key]
      label = (tf.reshape(tf.cast(label, tf.float32), [1]) if config.regression else
               tf.cast(label, tf.int32))
      if form == "features":
        return ex[features_key], label
      image = tf.io.decode_image(ex[image_key], channels=shape[2], expand_animations=False)
      image.set_shape([None, None, shape[2]])
      return image, label

    def read(paths):
      ds = tf.data.Dataset.from_tensor_slices(paths).interleave(
          tf.data.TFRecordDataset, cycle_length=min(len(paths), 8),
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      return ds.map(plain(parse), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return Read({role: read(paths) for role, paths in files.items()}, self.split_sizes(source),
                validation_source="validation* files",
                # Training files sharded by file under multi-worker training (see bundle.batches).
                file_shards={"train": len(files["train"])} if "validation" in files else {})


def cluster_workers(environ=os.environ) -> int:
  """Workers of the TF_CONFIG cluster (1 without one): how many file shards training needs."""
  try:
    cluster = json.loads(environ.get("TF_CONFIG", "{}")).get("cluster", {})
  except ValueError:
    return 1
  return max(1, sum(len(v) for k, v in cluster.items() if k in ("chief", "worker")))


TFRECORD = TFRecords()

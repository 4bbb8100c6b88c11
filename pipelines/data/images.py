"""``--dataset=images:DIR``: the user's images in class folders, checked without TensorFlow.

The layout Keras' ``image_dataset_from_directory`` and TFDS' ``ImageFolder`` use: either
``DIR/<class>/*.jpg|png|bmp|gif`` (one pool: test and validation are carved from it, seeded), or
``DIR/train/<class>/...`` and ``DIR/test/<class>/...`` with an optional ``DIR/validation/...``.
Labels are the sorted class-folder names (kept for reports and the export). Only file names and
image headers are read here (a few bytes per file), so a folder of any size is checked in
seconds and nothing is decoded before training: :meth:`Images.read` decodes in the input
pipeline (and :func:`pipelines.data.bundle.load` resizes).

Every problem is one line naming the folder or file: an empty folder, a class present in train
but not in test, a file that is not an image, images of mixed sizes without ``--image_size``.
"""

import logging
import os
import struct
from typing import Dict, List, Tuple

import numpy as np

from pipelines.config.data import IMAGES_PREFIX, DataConfig
from pipelines.config.errors import ConfigError
from pipelines.data.base import Read, Source, SourceKind, carve_indices, carved_test

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_DIRS = ("train", "validation", "test")


def header_size(path: str) -> Tuple[int, int, int]:
  """``(height, width, channels)`` from an image file's header, or ConfigError naming the file.

  PNG, JPEG (baseline and progressive SOF markers), BMP and GIF; channels 1 or 3 (an alpha
  channel is dropped when decoding, as Keras' loader does with ``color_mode="rgb"``).
  """
  try:
    with open(path, "rb") as f:
      head = f.read(32)
      if head.startswith(b"\x89PNG\r\n\x1a\n"):
        width, height = struct.unpack(">II", head[16:24])
        color = head[25]
        return int(height), int(width), 1 if color in (0, 4) else 3
      if head.startswith(b"BM"):
        width, height = struct.unpack("<ii", head[18:26])
        return abs(int(height)), int(width), 3
      if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10])
        return int(height), int(width), 3
      if head.startswith(b"\xff\xd8"):
        f.seek(2)
        while True:
          marker = f.read(2)
          if len(marker) < 2 or marker[0] != 0xFF:
            break
          if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
            continue
          length = struct.unpack(">H", f.read(2))[0]
          if marker[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                           0xCF):
            _, height, width, comps = struct.unpack(">BHHB", f.read(6))
            return int(height), int(width), 1 if comps == 1 else 3
          f.seek(length - 2, 1)
  except (OSError, struct.error) as e:
    raise ConfigError("--dataset=images: %s cannot be read (%s)" % (path, e)) from None
  raise ConfigError("--dataset=images: %s is not a PNG, JPEG, BMP or GIF image" % path)


def _class_files(directory: str) -> Dict[str, List[str]]:
  classes = sorted(d for d in os.listdir(directory)
                   if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
  out = {}
  for name in classes:
    folder = os.path.join(directory, name)
    files = []
    for root, _, names in os.walk(folder):
      for f in sorted(names):
        if f.startswith("."):
          continue
        if not f.lower().endswith(EXTENSIONS):
          raise ConfigError("--dataset=images: %s is not an image (expected %s files)" % (
              os.path.join(root, f), "/".join(e[1:] for e in EXTENSIONS)))
        files.append(os.path.join(root, f))
    out[name] = sorted(files)
  return out


def scan(root: str) -> Dict[str, Dict[str, List[str]]]:
  """``{split: {class: [files]}}`` with split ``pool`` for the one-folder layout."""
  if not os.path.isdir(root):
    raise ConfigError("--dataset=images:%s: no such directory" % root)
  entries = set(os.listdir(root))
  if {"train", "test"} <= entries:
    splits = {s: _class_files(os.path.join(root, s)) for s in SPLIT_DIRS if s in entries}
  elif "train" in entries or "test" in entries:
    raise ConfigError("--dataset=images:%s has a %s folder but no %s folder; use DIR/<class>/... "
                      "or both DIR/train/<class>/... and DIR/test/<class>/..." % (
                          root, "train" if "train" in entries else "test",
                          "test" if "train" in entries else "train"))
  else:
    splits = {"pool": _class_files(root)}
  for split, classes in splits.items():
    where = root if split == "pool" else os.path.join(root, split)
    if not classes:
      raise ConfigError("--dataset=images:%s: no class folders in %s" % (root, where))
    for name, files in classes.items():
      if not files:
        raise ConfigError("--dataset=images:%s: class folder %s holds no images" % (
            root, os.path.join(where, name)))
  names = sorted(splits.get("train", splits.get("pool")))
  for split, classes in splits.items():
    if sorted(classes) != names:
      missing = sorted(set(names) - set(classes))
      extra = sorted(set(classes) - set(names))
      raise ConfigError("--dataset=images:%s: %s; every split needs the same class folders" % (
          root, "; ".join(
              (["class %s is in train but not in %s" % (", ".join(missing), split)] if missing
               else []) +
              (["class %s is in %s but not in train" % (", ".join(extra), split)] if extra
               else []))))
  if len(names) < 2:
    raise ConfigError("--dataset=images:%s: one class folder (%s); classification needs at "
                      "least 2" % (root, names[0]))
  return splits


CLASSES_SAID = 12  # at most this many classes are named in the class-order line


def class_order(names) -> str:
  """The line that says which label each class folder got: ``classes (sorted folder names):
  cat=0, dog=1, ...``; beyond :data:`CLASSES_SAID` classes, the first ones and the last, with the
  count."""
  pairs = ["%s=%d" % (name, i) for i, name in enumerate(names)]
  if len(pairs) > CLASSES_SAID:
    pairs = pairs[:CLASSES_SAID - 2] + ["...", pairs[-1]]
    return "classes (sorted folder names, %d of them): %s" % (len(names), ", ".join(pairs))
  return "classes (sorted folder names): %s" % ", ".join(pairs)


class Images(SourceKind):
  """Image files in class folders; labels are the sorted folder names."""

  name, prefix, usage = "images", IMAGES_PREFIX, "images:/folder (a folder per class)"
  seeded = True  # the one-folder layout's test split

  def resolve(self, config: DataConfig) -> Source:
    """File lists and labels per split, shape and class names."""
    root = config.images_path
    splits = scan(root)
    names = sorted(next(iter(splits.values())))
    headers = [header_size(path) for classes in splits.values() for files in classes.values()
               for path in files]
    sizes = {(h, w) for h, w, _ in headers}
    if config.image_size is None and len(sizes) > 1:
      example = sorted(sizes)[:3]
      raise ConfigError("--dataset=images:%s: images of mixed sizes (%s, ...); pass "
                        "--image_size=H,W to resize them" % (
                            root, ", ".join("%dx%d" % s for s in example)))
    height, width = (tuple(config.image_size) if config.image_size is not None
                     else next(iter(sizes)))
    files, test_source = {}, None
    for split, classes in splits.items():
      paths = [p for name in names for p in classes[name]]
      labels = np.array([i for i, name in enumerate(names) for _ in classes[name]], np.int32)
      files[split] = (paths, labels)
    if "pool" in files:
      paths, labels = files.pop("pool")
      train_idx, test_idx = carve_indices(len(paths), config.test_fraction, config.seed)
      files["train"] = ([paths[i] for i in train_idx], labels[train_idx])
      files["test"] = ([paths[i] for i in test_idx], labels[test_idx])
      test_source = carved_test("the image folder", config)
    depth = 3 if any(c == 3 for _, _, c in headers) else 1
    return Source(kind=self, input_shape=(int(height), int(width), depth),
                  num_classes=len(names), input_dtype=np.dtype(np.uint8), payload=files,
                  class_names=tuple(names), test_source=test_source)

  def split_sizes(self, source: Source) -> dict:
    return {split: len(paths) for split, (paths, _) in source.payload.items()}

  def read(self, source: Source, config: DataConfig) -> Read:
    """File paths and labels in memory, each image decoded in the input pipeline (uint8, as
    TFDS images)."""
    from models.compat import plain, tf  # pylint: disable=g-import-not-at-top  (reading)
    channels = source.input_shape[2]

    def decode(path, label):
      image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
      image.set_shape([None, None, channels])
      return image, label

    def dataset(paths, labels):
      ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string),
                                               tf.constant(labels, tf.int32)))
      return ds.map(plain(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # The label of each class is its folder's place in sorted order: say it, once per load.
    logging.getLogger("kdprune").info("[data] %s", class_order(source.class_names))
    paths, labels = source.payload["train"]
    return Read({split: dataset(*files) for split, files in source.payload.items()
                 if split != "train"},
                self.split_sizes(source), validation_source="validation folder",
                pick=lambda rows: dataset([paths[i] for i in rows], labels[rows]))


IMAGES = Images()

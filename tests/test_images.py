"""--dataset=images:DIR: class folders of image files, checked before work, decoded in tf.data."""

import os

import numpy as np
import pytest
from PIL import Image

from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import images as image_source
from pipelines.data import sources
from pipelines.runtime import execute
from pipelines.stages import teacher
from tests.conftest import tiny_teacher_config


def _write(folder, images, fmt="png"):
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(image).save(os.path.join(folder, "%03d.%s" % (i, fmt)))


def _digits(split, classes=(0, 1, 2), per_class=30):
  bundle = data.load(data.DataConfig(dataset="digits"))
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.raw[split].batch(2000)])
  x, y = np.concatenate(xs)[..., 0], np.concatenate(ys)
  return {c: x[y == c][:per_class] for c in classes}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  names = {0: "zero", 1: "one", 2: "two"}
  for split in ("train", "test"):
    for c, images in _digits(split).items():
      _write(root / "split" / split / names[c], images)
  for c, images in _digits("train").items():
    _write(root / "pool" / names[c], images, fmt="jpg" if c == 2 else "png")
  return root


def test_train_and_test_folders_by_class(folders, caplog):
  config = data.DataConfig(dataset="images:%s" % (folders / "split"))
  with caplog.at_level("INFO", logger="kdprune"):
    bundle = data.load(config)
  # The class order is said when the data is read.
  assert "[data] classes (sorted folder names): one=0, two=1, zero=2" in caplog.text
  assert bundle.input_shape == (8, 8, 1) and bundle.num_classes == 3
  assert bundle.class_names == ("one", "two", "zero")  # sorted folder names are the labels
  assert bundle.num_examples["test"] == 90
  assert bundle.num_examples["train"] + bundle.num_examples["validation"] == 90
  assert sources.split_sizes(config) == bundle.num_examples
  x, y = next(iter(bundle.raw["test"].batch(100)))
  expected = _digits("test")
  np.testing.assert_array_equal(x.numpy()[y.numpy() == 2][..., 0], expected[0])  # "zero" is 2
  assert bundle.describe()["class_names"] == ["one", "two", "zero"]
  assert bundle.test_source is None  # the test folder: the data's own test split
  assert bundle.describe()["test_source"] == "the source's own test split"


def test_the_class_order_line_names_a_few_classes_of_many():
  assert image_source.class_order(("cat", "dog")) == "classes (sorted folder names): cat=0, dog=1"
  names = ["c%03d" % i for i in range(102)]
  line = image_source.class_order(names)
  assert line == ("classes (sorted folder names, 102 of them): c000=0, c001=1, c002=2, c003=3, "
                  "c004=4, c005=5, c006=6, c007=7, c008=8, c009=9, ..., c101=101")
  assert image_source.class_order(names[:12]).endswith("c010=10, c011=11")  # 12: all of them


def test_one_folder_is_split_seeded_and_resized(folders):
  config = data.DataConfig(dataset="images:%s" % (folders / "pool"), image_size=(12, 10),
                           test_fraction=0.25)
  bundle = data.load(config)
  assert bundle.input_shape == (12, 10, 1)
  assert bundle.num_examples["test"] == round(90 * 0.25)
  x, _ = next(iter(bundle.batches("train", 4)))
  assert x.shape == (4, 12, 10, 1) and float(x.numpy().max()) <= 1.0  # uint8 scaled to [0, 1]
  first = list(sources.resolve(config).payload["test"][0])
  sources._LAST.clear()  # pylint: disable=protected-access  (resolve again, not from the memo)
  assert list(sources.resolve(config).payload["test"][0]) == first  # the same seeded test split
  assert bundle.test_source == ("carved by kdprune from the image folder (--test_fraction=0.25, "
                                "--seed=0)")


@pytest.mark.slow
def test_a_teacher_imported_on_one_folder_is_warned_of_the_carved_test_split(folders, tmp_path,
                                                                              caplog):
  """kdprune carves the test split of a one-folder layout itself: an imported teacher may have
  trained on it. The teacher's record says so (the export's verdict reads it), and so does a
  warning; a train/ + test/ layout is not suspected."""
  from models.compat import keras  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "teacher.keras")
  keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                    keras.layers.Dense(3)]).save(path)
  metrics = {}
  for layout in ("pool", "split"):
    config = teacher.TeacherConfig(data=data.DataConfig(
        dataset="images:%s" % (folders / layout)), path=path, progress="none")
    with caplog.at_level("INFO", logger="kdprune"):
      caplog.clear()
      outcome = execute.execute("teacher", teacher.run, config, str(tmp_path / layout),
                                teacher.fingerprint_inputs(config), log=lambda *_: None)
    metrics[layout] = (outcome.entry["metrics"]["test_source"], caplog.text)
  carved, said = metrics["pool"]
  assert carved == "carved by kdprune from the image folder (--test_fraction=0.2, --seed=0)"
  assert ("the test split was %s: if the imported teacher was trained on any of those examples, "
          "its test figures are inflated; give the data its own test split (lay the folder out "
          "as DIR/train/<class>/... and DIR/test/<class>/..., the teacher trained on train/ "
          "only)" % carved) in said
  assert metrics["split"][0] is None and "inflated" not in metrics["split"][1]


def test_a_teacher_trains_on_an_image_folder(folders, tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(tiny_teacher_config(epochs=25, batch_size=16), data=data.DataConfig(
      dataset="images:%s" % (folders / "split")))
  outcome = execute.execute("teacher", teacher.run, config, str(tmp_path),
                            teacher.fingerprint_inputs(config), log=lambda *_: None)
  assert outcome.entry["metrics"]["test_accuracy"] > 0.6  # chance: 1/3


def _bad(tmp_path, kind):
  root = tmp_path / kind
  img = np.zeros((8, 8), np.uint8)
  if kind == "empty":
    os.makedirs(root)
  elif kind == "class_missing":
    _write(root / "train" / "a", [img])
    _write(root / "train" / "b", [img])
    _write(root / "test" / "a", [img])
  elif kind == "not_image":
    _write(root / "a", [img])
    _write(root / "b", [img])
    (root / "b" / "notes.txt").write_text("hello")
  elif kind == "fake_png":
    _write(root / "a", [img])
    os.makedirs(root / "b")
    (root / "b" / "x.png").write_bytes(b"definitely not a png")
  elif kind == "mixed":
    _write(root / "a", [img])
    _write(root / "b", [np.zeros((9, 7), np.uint8)])
  return "images:%s" % root


@pytest.mark.parametrize("kind, message", [
    ("empty", "no class folders in"),
    ("class_missing", "class b is in train but not in test"),
    ("not_image", "notes.txt is not an image"),
    ("fake_png", "x.png is not a PNG, JPEG, BMP or GIF image"),
    ("mixed", "images of mixed sizes (8x8, 9x7, ...); pass --image_size=H,W"),
])
def test_bad_image_folders_are_refused_in_one_line(tmp_path, kind, message):
  with pytest.raises(ConfigError) as err:
    sources.resolve(data.DataConfig(dataset=_bad(tmp_path, kind)))
  assert message in str(err.value) and "\n" not in str(err.value)

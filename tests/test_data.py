"""Data: the embedded default, TFDS (mocked and real), .npz, splits and errors."""

import os
import re

import numpy as np
import pytest

from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import sources
from tests.conftest import SHARED_TFDS, write_npz


def _labels(ds):
  return np.array([int(y) for _, y in ds])


def test_digits_default_needs_no_network_and_has_the_right_shape():
  bundle = data.load(data.DataConfig())
  assert bundle.name == "digits" and bundle.source == "tfds"
  assert bundle.input_shape == (8, 8, 1)
  assert bundle.num_classes == 10
  assert bundle.num_examples == {"train": 1294, "validation": 144, "test": 359}
  assert sum(bundle.num_examples.values()) == 1797
  x, y = next(iter(bundle.batches("train", 2000)))
  assert x.shape == (1294, 8, 8, 1) and x.dtype.name == "float32"
  assert float(np.min(x)) == 0.0 and float(np.max(x)) == 1.0
  assert sorted(np.unique(y.numpy())) == list(range(10))
  assert bundle.steps_per_epoch(64) == 21  # ceil(1294 / 64)


def test_carve_indices_is_seeded_disjoint_and_complete():
  tr, va = sources.carve_indices(1000, 0.1, seed=3)
  assert len(va) == 100 and len(tr) == 900
  assert not set(tr) & set(va) and set(tr) | set(va) == set(range(1000))
  tr2, va2 = sources.carve_indices(1000, 0.1, seed=3)
  np.testing.assert_array_equal(va, va2)
  _, va3 = sources.carve_indices(1000, 0.1, seed=4)
  assert set(va) != set(va3)
  with pytest.raises(ConfigError):
    sources.carve_indices(1, 0.5, seed=0)


def test_validation_carve_is_deterministic_and_disjoint_from_train():
  a = data.load(data.DataConfig(seed=1))
  b = data.load(data.DataConfig(seed=1))
  c = data.load(data.DataConfig(seed=2))
  np.testing.assert_array_equal(_labels(a.validation), _labels(b.validation))
  assert not np.array_equal(_labels(a.validation), _labels(c.validation))
  train_x = {np.asarray(x).tobytes() for x, _ in a.train}
  val_x = [np.asarray(x).tobytes() for x, _ in a.validation]
  # digits has a handful of duplicate images; the carve must not move examples across.
  assert sum(v in train_x for v in val_x) <= 2
  assert "carved from train" in a.validation_source


def test_train_examples_limits_train_only():
  bundle = data.load(data.DataConfig(train_examples=100))
  assert bundle.num_examples["train"] == 100
  assert len(_labels(bundle.train)) == 100
  assert bundle.num_examples["test"] == 359


def test_head_is_the_first_examples_and_leaves_the_cache_whole():
  # export takes its latency example and calibration set with head(): a partial read of a fresh
  # in-memory cache could leave it completed with one example (6 of 100 runs; BUILD_NOTES.md,
  # "Pitfall: a partial read of a fresh in-memory cache").
  # head() reads the split before its cache, so the cache is never read partially.
  bundle = data.load(data.DataConfig())
  x, y = bundle.head("test", 3)
  first = [(a.numpy(), b.numpy()) for a, b in bundle.test][:3]  # a whole pass: the cache is full
  assert x.shape == (3,) + bundle.input_shape and x.dtype == np.float32
  assert all(np.array_equal(x[i], first[i][0]) and y[i] == first[i][1] for i in range(3))
  assert sum(int(b.shape[0]) for b, _ in bundle.batches("test", 100)) == 359
  assert len(bundle.head("test", 1000)[0]) == 359


def test_shuffled_batches_differ_between_epochs_but_keep_the_examples():
  bundle = data.load(data.DataConfig())
  ds = bundle.batches("train", 2000, shuffle=True, seed=0)
  e1, e2 = [next(iter(ds))[1].numpy() for _ in range(2)]
  assert not np.array_equal(e1, e2)
  assert sorted(e1) == sorted(e2)


def test_npz_carves_validation(tmp_path):
  path = write_npz(tmp_path / "d.npz", n_train=50, classes=3)
  bundle = data.load(data.DataConfig(dataset="npz:" + path))
  assert bundle.source == "npz"
  assert bundle.input_shape == (4, 4, 1) and bundle.num_classes == 3
  assert bundle.num_examples == {"train": 45, "validation": 5, "test": 20}


@pytest.mark.parametrize("kind", ["npz", "csv", "synthetic", "tfds"])
def test_the_kind_that_claims_a_dataset_counts_and_reads_it_alike(tmp_path, kind):
  """One dispatch (sources.KINDS) and one carve-and-count plan: split_sizes, without TensorFlow,
  says what load gives, carve and --train_examples included."""
  table = "\n".join(["a,b,y"] + ["%d,%d,%d" % (i, i * i, i % 2) for i in range(40)])
  (tmp_path / "d.csv").write_text(table + "\n")
  config = {"npz": dict(dataset="npz:" + write_npz(tmp_path / "d.npz", n_train=50)),
            "csv": dict(dataset="csv:%s" % (tmp_path / "d.csv"), target_column="y"),
            "synthetic": dict(task="regression", dataset="synthetic_regression:n_samples=90,"
                              "n_features=3,n_informative=2"),
            "tfds": dict(dataset="digits")}[kind]
  config = data.DataConfig(train_examples=20, validation_fraction=0.2, **config)
  assert sources.kind_of(config.dataset).name == kind
  bundle = data.load(config)
  assert bundle.source == kind and bundle.num_examples["train"] == 20
  assert sources.split_sizes(config) == bundle.num_examples
  assert sum(1 for _ in bundle.validation) == bundle.num_examples["validation"]


def test_npz_with_validation_split_and_uint8_scaling(tmp_path):
  rng = np.random.default_rng(0)
  path = write_npz(tmp_path / "d.npz", with_val=True,
                   x_train=rng.integers(0, 256, (60, 5, 5), dtype=np.uint8),
                   x_test=rng.integers(0, 256, (20, 5, 5), dtype=np.uint8),
                   x_val=rng.integers(0, 256, (10, 5, 5), dtype=np.uint8))
  bundle = data.load(data.DataConfig(dataset="npz:" + path))
  assert bundle.validation_source == "x_val/y_val"
  assert bundle.num_examples == {"train": 60, "validation": 10, "test": 20}
  assert bundle.input_shape == (5, 5, 1)  # [N, H, W] becomes greyscale images
  x, _ = next(iter(bundle.batches("train", 60)))
  assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0


def test_npz_flat_features_and_standardize(tmp_path):
  rng = np.random.default_rng(1)
  path = write_npz(tmp_path / "d.npz", x_train=rng.normal(5.0, 3.0, (200, 7)),
                   y_train=rng.integers(0, 2, 200), x_test=rng.normal(5.0, 3.0, (30, 7)),
                   y_test=rng.integers(0, 2, 30))
  bundle = data.load(data.DataConfig(dataset="npz:" + path, normalization="standardize"))
  assert bundle.input_shape == (7,)
  x, _ = next(iter(bundle.batches("train", 1000)))
  x = x.numpy()
  # Statistics are fitted on the (post-carve) training examples only.
  np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-3)


def test_tfds_standardize_fits_train_statistics():
  bundle = data.load(data.DataConfig(normalization="standardize"))
  x, _ = next(iter(bundle.batches("train", 5000)))
  assert abs(float(np.mean(x))) < 1e-4 and abs(float(np.std(x)) - 1.0) < 1e-3


@pytest.mark.parametrize("overrides,message", [
    (dict(y_test=None), "missing key(s) y_test"),
    (dict(x_val=np.zeros((3, 4, 4, 1))), "x_val and y_val must be given together"),
    (dict(y_train=np.zeros(59, int)), "x_train has 60 examples but y_train has 59"),
    (dict(x_test=np.zeros((20, 5, 5, 1))), "x_test examples have shape (5, 5, 1) but x_train's have (4, 4, 1)"),
    (dict(y_train=np.full(60, -1)), "y_train has label -1; labels must be >= 0"),
    (dict(y_train=np.full(60, 0.5)), "y_train holds non-integer values"),
    (dict(x_train=np.full((60, 4, 4, 1), np.nan)), "x_train contains NaN or infinite values"),
    (dict(x_train=np.array(["a"] * 60)), "x_train has dtype <U1; expected numbers"),
    (dict(y_test=np.zeros((20, 2), int)), "y_test has shape (20, 2); expected one class id per example"),
    (dict(x_train=np.zeros((0, 4, 4, 1)), y_train=np.zeros(0, int)), "x_train is empty"),
])
def test_npz_errors_are_one_line_and_name_the_problem(tmp_path, overrides, message):
  path = write_npz(tmp_path / "bad.npz", **overrides)
  with pytest.raises(ConfigError) as err:
    data.load(data.DataConfig(dataset="npz:" + path))
  text = str(err.value)
  assert message in text and "\n" not in text
  assert text.startswith("--dataset=npz:")


def test_npz_label_out_of_range_for_num_classes(tmp_path):
  path = write_npz(tmp_path / "d.npz", classes=3, y_test=np.array([0] * 19 + [5]))
  with pytest.raises(ConfigError, match=r"y_test has label 5, out of range for --num_classes=3"):
    data.load(data.DataConfig(dataset="npz:" + path, num_classes=3))
  # Without --num_classes the class count is inferred.
  assert data.load(data.DataConfig(dataset="npz:" + path)).num_classes == 6


@pytest.mark.parametrize("contents,message", [
    (None, "no such file"),
    (b"not a zip file", "not a readable .npz file"),
])
def test_npz_missing_or_unreadable_file(tmp_path, contents, message):
  path = tmp_path / "x.npz"
  if contents is not None:
    path.write_bytes(contents)
  with pytest.raises(ConfigError, match=message):
    data.load(data.DataConfig(dataset="npz:%s" % path))


def test_npz_with_pickled_objects_is_refused(tmp_path):
  path = tmp_path / "obj.npz"
  np.savez(path, x_train=np.array([{"a": 1}] * 4, dtype=object), y_train=np.zeros(4),
           x_test=np.zeros((2, 1)), y_test=np.zeros(2))
  with pytest.raises(ConfigError, match="not a readable .npz file|expected numbers"):
    data.load(data.DataConfig(dataset="npz:%s" % path))


def test_tfds_dataset_through_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=30):
    bundle = data.load(data.DataConfig(dataset="mnist", data_dir="/nonexistent/tfds"))
    assert bundle.input_shape == (28, 28, 1) and bundle.num_classes == 10
    assert bundle.num_examples == {"train": 27, "validation": 3, "test": 30}
    x, y = next(iter(bundle.batches("train", 64)))
    assert x.shape == (27, 28, 28, 1) and x.dtype.name == "float32"
    assert float(np.max(x)) <= 1.0 and y.dtype.name == "int32"


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_TFDS, "mnist")),
                    reason="needs ../shared/data/tfds (real MNIST)")
def test_real_mnist_from_a_prepared_tfds_directory():
  bundle = data.load(data.DataConfig(dataset="mnist", data_dir=SHARED_TFDS, train_examples=512))
  assert bundle.num_examples == {"train": 512, "validation": 6000, "test": 10000}
  x, y = next(iter(bundle.batches("test", 256)))
  assert x.shape == (256, 28, 28, 1)
  assert 0.05 < float(np.mean(x)) < 0.25  # real MNIST is mostly black


def test_unknown_tfds_name_suggests_close_names():
  with pytest.raises(ConfigError, match=r"--dataset=mnsit: no such TFDS dataset \(did you mean mnist"):
    data.load(data.DataConfig(dataset="mnsit"))


def test_an_unknown_name_lists_every_kind_of_source_and_suggests_a_name_once():
  from pipelines.data import sources
  with pytest.raises(ConfigError) as err:
    sources.resolve(data.DataConfig(dataset="digitz"))
  message = str(err.value)
  assert "(did you mean digits?)" in message  # "digits or digits" before
  for kind in ("images:", "tfrecord:", "npz:", "csv:", "synthetic_regression"):
    assert kind in message


def test_an_empty_dataset_lists_every_kind_of_source():
  with pytest.raises(ConfigError) as err:
    data.DataConfig(dataset="").validate()
  for kind in ("images:", "tfrecord:", "npz:", "csv:", "synthetic_regression", "digits"):
    assert kind in str(err.value)


def _make_source(root, kind):
  if kind == "images:":
    (root / "photos" / "cat").mkdir(parents=True)
    return root / "photos"
  if kind == "tfrecord:":
    (root / "recs").mkdir()
    (root / "recs" / "train.tfrecord").write_bytes(b"")
    return root / "recs"
  path = root / ("d." + kind[:-1])
  path.write_bytes(b"")
  return path


@pytest.mark.parametrize("prefix", ["images:", "tfrecord:", "npz:", "csv:"])
def test_a_path_without_its_prefix_is_refused_with_the_prefix_it_needs(tmp_path, prefix):
  """A folder of class folders given as --dataset=/path/to/photos got TFDS' "Parsing builder
  name string ... failed"."""
  from pipelines.data import sources
  path = _make_source(tmp_path, prefix)
  with pytest.raises(ConfigError, match=r"--dataset=%s is a (folder|file): pass --dataset=%s%s" % (
      path, prefix, path)):
    sources.resolve(data.DataConfig(dataset=str(path)))


def test_a_missing_path_is_refused_as_one():
  from pipelines.data import sources
  with pytest.raises(ConfigError, match="--dataset=/no/such/photos: no such file or folder"):
    sources.resolve(data.DataConfig(dataset="/no/such/photos"))


def test_unprepared_tfds_dataset_without_network_fails_in_one_line(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  def offline(self, *args, **kwargs):
    raise ConnectionError("Failed to resolve host\nsecond line of a long report")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(ConfigError) as err:
    data.load(data.DataConfig(dataset="mnist", data_dir=str(tmp_path)))
  text = str(err.value)
  assert "--dataset=mnist: not prepared in" in text and "--data_dir" in text
  assert "Failed to resolve host" in text and "\n" not in text


@pytest.mark.parametrize("kwargs,flag", [
    (dict(validation_fraction=0.0), "--validation_fraction"),
    (dict(validation_fraction=1.0), "--validation_fraction"),
    (dict(normalization="zscore"), "--normalization"),
    (dict(dataset=""), "--dataset"),
    (dict(dataset="npz:"), "--dataset=npz:"),
    (dict(train_examples=-1), "--train_examples"),
    (dict(num_classes=1), "--num_classes"),
    (dict(image_size=(0, 4)), "--image_size"),
])
def test_data_config_validation(kwargs, flag):
  with pytest.raises(ConfigError, match="^" + flag):
    data.DataConfig(**kwargs).validate()


def test_shift_augmentation_moves_pixels_not_labels():
  bundle = data.load(data.DataConfig())
  (x0, y0), = bundle.batches("train", 256).take(1)
  (x1, y1), = bundle.batches("train", 256, augment="shift", seed=1).take(1)
  np.testing.assert_array_equal(y0.numpy(), y1.numpy())
  assert x1.shape == x0.shape
  assert not np.allclose(x0.numpy(), x1.numpy())
  # A translation (zero fill) never brightens the image as a whole.
  assert float(np.sum(x1)) <= float(np.sum(x0)) * 1.001


def test_augmentation_needs_images(tmp_path):
  from pipelines.data import sources
  path = write_npz(tmp_path / "flat.npz", shape=(7,))
  with pytest.raises(ConfigError, match="--teacher_augment=shift needs images"):
    sources.check_augment(data.DataConfig(dataset="npz:" + path), "shift", "--teacher_augment")


def test_tfds_splits_by_role_with_slicing():
  config = data.DataConfig(dataset="digits", splits=(("train", "train[:80%]"),
                                                     ("validation", "train[80%:]"),
                                                     ("test", "test")))
  bundle = data.load(config)
  whole = data.load(data.DataConfig(dataset="digits"))
  n_train = whole.num_examples["train"] + whole.num_examples["validation"]
  assert bundle.num_examples["train"] + bundle.num_examples["validation"] == n_train
  assert bundle.num_examples["validation"] == n_train - round(0.8 * n_train)
  assert bundle.validation_source == "split train[80%:]"
  assert sources.split_sizes(config) == bundle.num_examples
  assert sum(1 for _ in bundle.batches("validation", 1000).unbatch()) == \
      bundle.num_examples["validation"]
  assert "splits" not in configs.resolved(data.DataConfig())  # old fingerprints unchanged


def test_validation_and_test_on_the_same_split_is_said(caplog):
  import logging  # pylint: disable=g-import-not-at-top
  config = data.DataConfig(dataset="digits", splits=(("train", "train"), ("validation", "test"),
                                                     ("test", "test")))
  with caplog.at_level(logging.WARNING, logger="kdprune"):
    sources.resolve(config)
  assert "validation and test read the same split" in caplog.text


@pytest.mark.parametrize("splits, message", [
    ((("train", "training"), ("test", "test")), "--splits=train=training: digits has no 'training'"),
    ((("train", "train[:abc]"), ("test", "test")), "--splits=train=train[:abc]: Error parsing"),
    ((("train", "train"), ("test", "train")), "train and test read the same split"),
    ((("train", "train"),), "must name train and test"),
    ((("train", "train"), ("test", "test"), ("holdout", "test")), "must name train and test"),
])
def test_bad_splits_are_refused_in_one_line(splits, message):
  with pytest.raises(ConfigError, match=re.escape(message)):
    sources.resolve(data.DataConfig(dataset="digits", splits=splits))


def test_splits_are_for_tfds(tmp_path):
  path = write_npz(tmp_path / "d.npz")
  with pytest.raises(ConfigError, match="--splits is for TFDS datasets"):
    data.DataConfig(dataset="npz:%s" % path, splits=(("train", "a"), ("test", "b"))).validate()


def test_crop_flip_crops_resizes_and_flips_per_image_seeded():
  from models.compat import tf  # pylint: disable=g-import-not-at-top
  x = tf.constant(np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8, 1) / 128.0)
  x = tf.tile(x[:1], [16, 1, 1, 1])  # 16 copies of one image
  first = data.augmenter("crop_flip", (8, 8, 1), seed=3)(x).numpy()
  again = data.augmenter("crop_flip", (8, 8, 1), seed=3)(x).numpy()
  other = data.augmenter("crop_flip", (8, 8, 1), seed=4)(x).numpy()
  assert first.shape == (16, 8, 8, 1)
  np.testing.assert_array_equal(first, again)  # seeded
  assert not np.array_equal(first, other)
  assert len({first[i].tobytes() for i in range(16)}) > 8  # each image its own view
  assert float(first.min()) >= float(x.numpy().min()) - 1e-6  # a crop of the image, resized
  assert float(first.max()) <= float(x.numpy().max()) + 1e-6


def test_calibration_set_is_sampled_across_a_class_sorted_split(tmp_path):
  """PTQ calibration draws from the whole train split, seeded, not its first rows (issue 17, 10)."""
  from pipelines.export import tflite  # pylint: disable=g-import-not-at-top
  classes = 4
  y = np.repeat(np.arange(classes), 50)  # all 0s, then all 1s, ...
  path = write_npz(tmp_path / "sorted.npz", n_train=200, classes=classes, y_train=y, with_val=True,
                   x_train=(y[:, None, None, None] * np.ones((200, 4, 4, 1))).astype(np.float32))
  bundle = data.load(data.DataConfig(dataset="npz:" + path))  # its own validation: train as stored
  assert list(bundle.head("train", 32)[1]) == [0] * 32  # storage order: one class

  def calibration(**kwargs):
    return np.concatenate([batch[0] for batch in tflite.representative(bundle, 32, **kwargs)()])

  xs = calibration()
  assert len(xs) == 32
  # The inputs are the class id everywhere, so the set of values names the classes seen.
  seen = np.unique(xs[:, 0, 0, 0])
  assert len(seen) == classes, seen
  np.testing.assert_array_equal(calibration(seed=7), calibration(seed=7))  # same seed, same set
  assert not np.array_equal(calibration(seed=7), calibration(seed=8))
  x_all, y_all = bundle.sample("train", 10 ** 6, seed=3)  # more than there are: the whole split
  assert len(x_all) == 200 and sorted(np.unique(y_all)) == list(range(classes))


def _rss_anon_mb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) / 1024.0
  pytest.skip("no RssAnon in /proc/self/status")


def test_npz_is_memory_mapped_and_streamed_without_a_copy(tmp_path, monkeypatch):
  from pipelines.data import arrays as array_lib
  from pipelines.data import caching
  monkeypatch.setattr(caching, "_STATE", {"root": None})  # no run directory: no file cache
  n = 36000  # 36000 x 64 x 64 uint8: 141 MiB of training images
  x = np.empty((n, 64, 64, 1), np.uint8)
  x[:] = (np.arange(n, dtype=np.int64) % 251).astype(np.uint8)[:, None, None, None]
  y = (np.arange(n) % 7).astype(np.int64)
  path = tmp_path / "big.npz"
  np.savez(path, x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
  del x
  mapped = array_lib.mapped_npz(str(path))
  assert isinstance(mapped["x_train"], np.memmap) and mapped["x_train"].shape == (n, 64, 64, 1)
  assert int(mapped["x_train"][1234, 5, 6, 0]) == 1234 % 251
  small = tmp_path / "small.npz"
  np.savez_compressed(small, a=np.arange(5))  # compressed members are read into memory
  assert list(array_lib.mapped_npz(str(small))["a"]) == list(range(5))
  before = _rss_anon_mb()
  bundle = data.load(data.DataConfig(dataset="npz:%s" % path, cache_budget_mb=1))
  assert bundle.cache_note.startswith("data cache: none")
  seen, total = 0, 0.0
  for xb, yb in bundle.batches("train", 64):
    seen += int(xb.shape[0])
    total += float(np.sum(yb.numpy()))
  assert seen == bundle.num_examples["train"] == n - 3600
  grown = _rss_anon_mb() - before
  assert grown < 70, "anonymous memory grew by %.0f MiB reading a 141 MiB npz" % grown
  # The carve-out takes the same rows as before (sorted seeded indices), without a copy.
  tr, _ = data.carve_indices(n, 0.1, 0)
  assert total == float(np.sum(y[tr]))

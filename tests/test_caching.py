"""--cache=auto|memory|disk|none, the carved validation split, and head() reading only what it
needs (pipelines/data/caching.py)."""

import glob
import os

import numpy as np
import pytest

from models.compat import tf
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import caching
from tests.test_tfrecords import _digits, _image_example, _write


@pytest.fixture
def records(tmp_path):
  """200 digits as PNG records in two train files and 50 in one test file (no validation)."""
  root = tmp_path / "records"
  root.mkdir()
  x, y = _digits("train")
  _write(root / "train-00000-of-00002", [_image_example(x[i], y[i]) for i in range(0, 200, 2)])
  _write(root / "train-00001-of-00002", [_image_example(x[i], y[i]) for i in range(1, 200, 2)])
  _write(root / "test-00000-of-00001", [_image_example(x[i], y[i]) for i in range(200, 250)])
  return root


@pytest.fixture(autouse=True)
def no_cache_root():
  """A stage run earlier in this process leaves its run directory as the root: start without."""
  previous = caching.root()
  caching.set_root(None)
  yield
  caching.set_root(previous)


@pytest.fixture
def cache_root(tmp_path):
  caching.set_root(str(tmp_path / "cache"))
  yield tmp_path / "cache"
  caching.set_root(None)


def _all(ds):
  return np.concatenate([x.numpy() for x, _ in ds.batch(1000)])


def test_auto_chooses_memory_within_the_budget_else_disk_else_none():
  assert caching.choose("auto", {"train": 10, "test": 5}, 100, True)[0] == "memory"
  mode, why = caching.choose("auto", {"train": 90, "test": 20}, 100, True)
  assert mode == "disk" and "exceed the budget" in why
  assert caching.choose("auto", {"train": 90, "test": 20}, 100, False)[0] == "none"
  assert caching.choose("auto", {"train": None}, 1 << 40, True)[0] == "disk"  # unknown size
  assert caching.choose("memory", {"train": 1 << 40}, 1, True) == ("memory", "--cache=memory")
  assert 0 < caching.default_budget_bytes() <= 2 << 30


def test_the_log_line_names_the_mode_and_why(records, caplog):
  caplog.set_level("INFO", logger="kdprune")
  bundle = data.load(data.DataConfig(dataset="tfrecord:%s" % records, num_classes=10))
  assert bundle.cache_note.startswith("data cache: memory (the decoded splits (")
  assert any(r.getMessage() == "[data] " + bundle.cache_note for r in caplog.records)


def test_disk_cache_is_a_file_under_the_root_and_serves_later_epochs(records, cache_root):
  config = data.DataConfig(dataset="tfrecord:%s" % records, num_classes=10, cache_mode="disk")
  bundle = data.load(config)
  assert bundle.cache_note.startswith("data cache: disk (--cache=disk)")
  first = _all(bundle.raw["test"])
  assert glob.glob(str(cache_root / "*" / "test.index")), os.listdir(cache_root)
  for path in glob.glob(str(records / "test-*")):
    os.remove(path)  # the source is gone: a second pass can only come from the file cache
  np.testing.assert_array_equal(_all(bundle.raw["test"]), first)
  # A fresh bundle over the same data reads the same finished cache (the key is the data).
  assert caching.cache_key(config) == caching.cache_key(
      data.DataConfig(dataset="tfrecord:%s" % records, num_classes=10, cache_mode="disk"))


def test_disk_without_a_run_directory_is_refused():
  with pytest.raises(ConfigError, match="--cache=disk needs a run directory"):
    data.load(data.DataConfig(cache_mode="disk"))


def test_nocache_keeps_the_carved_validation_split_so_it_does_not_reread_train(records):
  config = data.DataConfig(dataset="tfrecord:%s" % records, num_classes=10, cache=False)
  bundle = data.load(config)
  assert "the validation split carved from train: memory" in bundle.cache_note
  first = _all(bundle.raw["validation"])
  assert len(first) == bundle.num_examples["validation"] == 20
  for path in glob.glob(str(records / "train-*")):
    os.remove(path)  # a second validation pass must not read the training files again
  np.testing.assert_array_equal(_all(bundle.raw["validation"]), first)
  with pytest.raises(tf.errors.NotFoundError):  # train itself is not cached under none
    _all(bundle.raw["train"])


def test_head_reads_only_what_it_needs():
  bundle = data.load(data.DataConfig(cache=False))
  seen = tf.Variable(0, dtype=tf.int64)

  def count(x, y):
    seen.assign_add(1)
    return x, y
  bundle.uncached["test"] = bundle.uncached["test"].map(count)
  x, _ = bundle.head("test", 5)
  assert x.shape[0] == 5 and int(seen.numpy()) == 5
  seen.assign(0)
  x, _ = bundle.sample("test", 3, seed=0)
  assert x.shape[0] == 3 and int(seen.numpy()) < bundle.num_examples["test"]


def test_cache_flag_keeps_its_boolean_spellings():
  from absl import flags
  from pipelines.cli import flags as cli_flags
  cli_flags.define_flags()
  for argv, mode, on in ((["--cache"], "auto", True), (["--nocache"], "auto", False),
                         (["--cache=disk"], "disk", True), (["--cache=none"], "auto", False),
                         ([], "auto", True)):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog"] + argv)
    config = cli_flags.data_config_from_flags()
    assert (config.cache_mode, config.cache) == (mode, on), argv
  flags.FLAGS.unparse_flags()
  with pytest.raises(flags.IllegalFlagValueError):
    flags.FLAGS(["prog", "--cache=ram"])
  flags.FLAGS.unparse_flags()
  # The pre-modes fingerprints hold: the new fields drop out of resolved() at their defaults.
  from pipelines.config import resolved
  assert "cache_mode" not in resolved(data.DataConfig(cache=False))
  # How examples are cached is no part of any fingerprint; the budget (it bounds the shuffle) is.
  assert "cache_mode" not in resolved(data.DataConfig(cache_mode="disk"))
  assert resolved(data.DataConfig(cache_budget_mb=64))["cache_budget_mb"] == 64


def test_the_shuffle_buffer_is_bounded_by_the_memory_budget():
  small = data.load(data.DataConfig(cache_budget_mb=1))
  spec = small.raw["train"].element_spec
  per = caching.example_bytes(spec)
  assert small.shuffle_buffer(spec) == (1 << 20) // (8 * per) < small.num_examples["train"]
  # The default (256 MiB of examples) keeps the old 65536 cap for MNIST- and CIFAR-size images.
  default = data.load(data.DataConfig())
  assert default.shuffle_buffer(spec) == 65536
  assert default.shuffle_buffer(tf.TensorSpec([32, 32, 3], tf.uint8)) == 65536

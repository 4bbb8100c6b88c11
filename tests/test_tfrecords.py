"""--dataset=tfrecord:DIR: tf.train.Example files (image and tabular forms), checked before work."""

import os

import numpy as np
import pytest

from models.compat import tf
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import sources, tfrecords


def _image_example(image, label, image_key="image/encoded", label_key="image/class/label"):
  return tf.train.Example(features=tf.train.Features(feature={
      image_key: tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[tf.io.encode_png(image).numpy()])),
      label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
  })).SerializeToString()


def _write(path, records):
  with tf.io.TFRecordWriter(str(path)) as w:
    for r in records:
      w.write(r)


def _digits(split):
  bundle = data.load(data.DataConfig(dataset="digits"))
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.raw[split].batch(5000)])
  return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp("records")
  x, y = _digits("train")
  x_test, y_test = _digits("test")
  n = 200
  _write(root / "train-00000-of-00002", [_image_example(x[i], y[i]) for i in range(0, n, 2)])
  _write(root / "train-00001-of-00002", [_image_example(x[i], y[i]) for i in range(1, n, 2)])
  _write(root / "test-00000-of-00001", [_image_example(x_test[i], y_test[i]) for i in range(50)])
  return root, x, y, x_test, y_test


def test_image_records_are_read_in_order_and_counted(records):
  root, _, _, x_test, y_test = records
  config = data.DataConfig(dataset="tfrecord:%s" % root, num_classes=10)
  bundle = data.load(config)
  assert bundle.input_shape == (8, 8, 1) and bundle.num_classes == 10
  assert bundle.num_examples["train"] + bundle.num_examples["validation"] == 200
  assert bundle.num_examples["test"] == 50
  assert sources.split_sizes(config) == bundle.num_examples
  x, y = next(iter(bundle.raw["test"].batch(100)))
  np.testing.assert_array_equal(x.numpy(), x_test[:50])  # PNG is lossless, one file in order
  np.testing.assert_array_equal(y.numpy(), y_test[:50])


def test_tabular_records_and_file_sharding(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (("train", 40), ("validation", 10), ("test", 10)):
    examples = []
    for _ in range(n):
      f = rng.normal(size=5).astype(np.float32)
      examples.append(tf.train.Example(features=tf.train.Features(feature={
          "features": tf.train.Feature(float_list=tf.train.FloatList(value=f)),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(f[0] > 0)]))}))
          .SerializeToString())
    for shard in range(2 if split == "train" else 1):
      _write(tmp_path / ("%s-%d" % (split, shard)), examples[shard::2] if split == "train" else
             examples)
  config = data.DataConfig(dataset="tfrecord:%s" % tmp_path, num_classes=2,
                           tfrecord_label_key="label")
  bundle = data.load(config)
  assert bundle.input_shape == (5,) and bundle.num_examples == {"train": 40, "validation": 10,
                                                                 "test": 10}
  assert bundle.validation_source == "validation* files"
  policy = tf.data.experimental.AutoShardPolicy
  os.environ["TF_CONFIG"] = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}'
  try:
    by_file = bundle.batches("train", 8).options().experimental_distribute.auto_shard_policy
    zipped = bundle.batches("train", 8, extras=np.zeros((40, 2), np.float32)).options()
  finally:
    del os.environ["TF_CONFIG"]
  assert by_file == policy.FILE  # 2 files for 2 workers
  assert zipped.experimental_distribute.auto_shard_policy == policy.DATA  # cached teacher rows


@pytest.mark.slow
def test_maxabs_on_feature_records_is_fitted_on_train(tmp_path):
  """--normalization=maxabs on feature records gave a NaN scale (no statistics were fitted)."""
  rng = np.random.default_rng(1)
  x = {"train": rng.normal(size=(30, 3)).astype(np.float32) * [1, 5, 0], "test": np.ones((5, 3))}
  for split, rows in x.items():
    _write(tmp_path / split, [tf.train.Example(features=tf.train.Features(feature={
        "features": tf.train.Feature(float_list=tf.train.FloatList(value=f)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))})).SerializeToString()
        for f in rows])
  bundle = data.load(data.DataConfig(dataset="tfrecord:%s" % tmp_path, num_classes=2,
                                     tfrecord_label_key="label", normalization="maxabs",
                                     validation_fraction=0.2))
  seen = np.concatenate([xb.numpy() for xb, _ in bundle.raw["train"].batch(100)])
  top = np.abs(seen).max(axis=0)
  np.testing.assert_array_equal(bundle.normalization["max_abs"], [top[0], top[1], 1.0])


def test_records_without_the_keys_name_the_keys_found(records, tmp_path):
  root = records[0]
  with pytest.raises(ConfigError, match=r"has no label 'label/id' .*image/class/label \(int64_list\)"):
    sources.resolve(data.DataConfig(dataset="tfrecord:%s" % root, num_classes=10,
                                    tfrecord_label_key="label/id"))
  _write(tmp_path / "train-0", [_image_example(np.zeros((8, 8, 1), np.uint8), 0, image_key="img")])
  _write(tmp_path / "test-0", [_image_example(np.zeros((8, 8, 1), np.uint8), 0, image_key="img")])
  with pytest.raises(ConfigError, match=r"neither image 'image/encoded' .* hold image/class/label "
                                        r"\(int64_list\), img \(bytes_list\)"):
    sources.resolve(data.DataConfig(dataset="tfrecord:%s" % tmp_path, num_classes=2))


def test_truncated_and_missing_files_are_refused(records, tmp_path):
  root = records[0]
  data_bytes = (root / "train-00000-of-00002").read_bytes()
  (tmp_path / "train-0").write_bytes(data_bytes[:-7])
  (tmp_path / "test-0").write_bytes((root / "test-00000-of-00001").read_bytes())
  with pytest.raises(ConfigError, match="train-0 is truncated"):
    tfrecords.count_records(str(tmp_path / "train-0"))
  os.remove(tmp_path / "test-0")
  with pytest.raises(ConfigError, match="no test\\* files"):
    sources.resolve(data.DataConfig(dataset="tfrecord:%s" % tmp_path, num_classes=10))
  with pytest.raises(ConfigError, match="needs --num_classes"):
    sources.resolve(data.DataConfig(dataset="tfrecord:%s" % root))

"""Serving the export from its files: preprocessing.json and ``kdprune-predict`` on raw inputs."""

import json

import numpy as np
import pytest

from models.compat import keras, tf
from models.registry import ModelSpec
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import sources
from pipelines.export import predict
from pipelines.export import tflite as tflite_tools
from pipelines.stages import export, qat, student, teacher
from tests.conftest import write_npz
from tests.test_cli import _assert_one_line_error, _run

MODULE = "pipelines.cli.predict"


def _raw_test_split(config):
  """The raw (stored, un-normalised) test examples of a bundle, in its fixed order."""
  bundle = data.load(config)
  xs, ys = zip(*bundle.raw["test"].as_numpy_iterator())
  return bundle, np.stack(xs), np.stack(ys)


def _product(workdir):
  report = json.loads((workdir / "export" / "default" / "report.json").read_text())
  return report, {m["name"]: m for m in report["models"]}["student_qat_int8"]


def _cli(tmp_path, model, inputs, name="out.csv"):
  out = tmp_path / name
  result = _run("--model=%s" % model, "--input=%s" % inputs, "--output=%s" % out, module=MODULE)
  assert result.returncode == 0, result.stderr
  return predict.read_predictions(str(out))


# ----------------------------------------------------------------------------
# The recorded normalisation is the one training applied, exactly.

def _csv_file(path, rows=240, seed=0):
  """A classification table whose features have very different scales (standardisation matters),
  ten features so that the first layer of a width-64 MLP student is pruned (640 weights)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(rows, 10)) * np.array([1, 10, 100, 0.1, 5, 50, 2, 1000, 0.5, 20])
  x += np.array([0, 100, -50, 3, 0, 7, 1, 5000, 0, -20])
  y = (x[:, 0] + x[:, 1] / 10 > 10).astype(int) + (x[:, 2] / 100 > 0.5).astype(int)
  names = ["f%d" % i for i in range(10)]
  lines = [",".join(names[:5] + ["label"] + names[5:])]
  for row, label in zip(x, y):
    cells = ["%.6g" % v for v in row]
    lines.append(",".join(cells[:5] + [str(label)] + cells[5:]))
  path.write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.mark.parametrize("kind", ["uint8", "standardize", "maxabs", "csv"])
def test_preprocessing_reproduces_the_bundle_normalisation_bit_for_bit(tmp_path, kind):
  if kind == "csv":
    config = data.DataConfig(dataset="csv:" + _csv_file(tmp_path / "t.csv"),
                             target_column="label")
  else:
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 256, (80, 4, 4, 3)).astype(np.uint8) if kind == "uint8"
         else (rng.normal(size=(80, 6)) * [1, 10, 100, 0.1, 3, 7]).astype(np.float32))
    path = write_npz(tmp_path / "d.npz", x_train=x[:60], x_test=x[60:],
                     y_train=rng.integers(0, 3, 60), y_test=rng.integers(0, 3, 20))
    config = data.DataConfig(dataset="npz:" + path,
                             normalization="auto" if kind == "uint8" else kind)
  bundle, raw, _ = _raw_test_split(config)
  spec = json.loads(json.dumps(bundle.preprocessing()))  # through JSON, as a server reads it
  expected = {"uint8": "scale", "standardize": "standardize", "maxabs": "maxabs",
              "csv": "standardize"}[kind]
  assert spec["normalization"]["kind"] == expected
  assert spec["input"]["shape"] == list(bundle.input_shape)
  assert spec["input"]["dtype"] == ("uint8" if kind == "uint8" else "float32")
  assert spec["class_names"] == ["0", "1", "2"] and spec["task"] == "classification"
  if kind == "csv":
    assert spec["feature_columns"] == ["f%d" % i for i in range(10)]
    # mean/std fitted on the training split only
    train = sources.resolve(config).payload["x_train"]
    tr, _ = sources.carve_indices(len(train), config.validation_fraction, config.seed)
    assert np.allclose(spec["normalization"]["mean"], train[tr].mean(0), rtol=1e-5)
  got = predict.normalize(raw, spec)
  want = np.stack([x for x, _ in bundle.test.as_numpy_iterator()])
  assert got.dtype == np.float32 and np.array_equal(got, want)


# ----------------------------------------------------------------------------
# (a) An image dataset: the embedded digits, raw uint8 images.

def test_export_writes_preprocessing_json_beside_the_model(finished_run):
  workdir, _, outcomes = finished_run
  d = workdir / "export" / "default"
  spec = json.loads((d / "preprocessing.json").read_text())
  report, _ = _product(workdir)
  assert report["preprocessing"] == spec
  assert spec["task"] == "classification" and spec["dataset"] == "digits"
  assert spec["input"] == {"shape": [8, 8, 1], "dtype": "uint8", "layout": "image HWC"}
  assert spec["normalization"]["kind"] == "scale"
  assert spec["normalization"]["scale"] == pytest.approx(1 / 255)
  assert spec["class_names"] == [str(i) for i in range(10)] and spec["resize"] is None
  assert spec["model"]["file"] == "student_qat_int8.tflite"
  assert outcomes[-1].entry["artifacts"]["preprocessing"].endswith("preprocessing.json")
  # Every .tflite carries the same record as metadata.
  for m in report["models"]:
    embedded = tflite_tools.read_metadata((workdir / m["file"]).read_bytes(),
                                          "kdprune_preprocessing")
    assert json.loads(embedded) == spec, m["name"]


@pytest.mark.slow
def test_predict_on_raw_digits_gives_the_reported_accuracy(finished_run, tmp_path):
  workdir, config, _ = finished_run
  report, product = _product(workdir)
  _, x, y = _raw_test_split(config.export.data)
  assert x.dtype == np.uint8 and len(x) == report["test_examples"]
  np.savez(tmp_path / "raw.npz", x_test=x[..., 0], y_test=y)  # [N, 8, 8]: greyscale as stored
  rows = _cli(tmp_path, workdir / "export" / "default", tmp_path / "raw.npz")
  assert [r["input"] for r in rows] == [str(i) for i in range(len(x))]
  pred = np.array([int(r["prediction"]) for r in rows])
  assert np.mean(pred == y) == product["test_accuracy"]  # exactly: same examples, same file
  assert all(r["label"] == r["prediction"] for r in rows)
  probs = np.array([float(r["probability"]) for r in rows])
  assert np.all((probs > 0.1) & (probs <= 1.0))

  # The same images as PNG files (a folder, and one file given alone).
  folder = tmp_path / "png"
  folder.mkdir()
  for i in range(12):
    tf.io.write_file(str(folder / ("img_%03d.png" % i)), tf.io.encode_png(x[i]))
  model = str(workdir / "export" / "default" / "student_qat_int8.tflite")
  out = tmp_path / "png.csv"
  summary = predict.predict(model, str(folder), str(out))
  assert summary["rows"] == 12
  png_rows = predict.read_predictions(str(out))
  assert [r["input"] for r in png_rows] == ["img_%03d.png" % i for i in range(12)]
  assert [r["prediction"] for r in png_rows] == [r["prediction"] for r in rows[:12]]
  # One file given alone, and the .tflite copied alone (it carries the record as metadata).
  alone = tmp_path / "alone" / "model.tflite"
  alone.parent.mkdir()
  alone.write_bytes(open(model, "rb").read())
  predict.predict(str(alone), str(folder / "img_003.png"), str(out))
  assert predict.read_predictions(str(out))[0]["prediction"] == rows[3]["prediction"]
  # A larger RGB image is converted to grey and resized to 8x8 as --image_size data would be.
  rgb = tf.image.grayscale_to_rgb(tf.image.resize(x[5], (32, 32), method="nearest"))
  tf.io.write_file(str(tmp_path / "big.png"), tf.io.encode_png(tf.cast(rgb, tf.uint8)))
  prepared = predict.read_inputs(str(tmp_path / "big.png"), report["preprocessing"])[1]
  assert prepared.shape == (1, 8, 8, 1) and prepared.dtype == np.uint8
  assert np.abs(prepared[0].astype(int) - x[5].astype(int)).mean() < 40


@pytest.mark.slow
def test_predict_bad_inputs_are_one_line_and_write_nothing(finished_run, tmp_path):
  workdir = finished_run[0]
  model = workdir / "export" / "default"
  out = tmp_path / "out.csv"
  np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 7, 7), np.uint8))
  result = _run("--model=%s" % model, "--input=%s" % (tmp_path / "wrong.npz"),
                "--output=%s" % out, module=MODULE)
  _assert_one_line_error(result, "kdprune-predict", "has shape (3, 7, 7, 1)", "[N, 8, 8, 1]")
  assert not out.exists()
  np.savez(tmp_path / "keys.npz", images=np.zeros((3, 8, 8), np.uint8))
  bare = tmp_path / "bare.tflite"  # a .tflite without the record
  bare.write_bytes(tflite_tools.convert(
      keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                        keras.layers.Dense(10)]), "float"))
  (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
  (tmp_path / "t.txt").write_text("x\n")
  for args, message in [
      ((model, tmp_path / "keys.npz"), "needs an array named x or x_test (found: images)"),
      ((bare, tmp_path / "keys.npz"), "no preprocessing.json beside the model and no "
                                       "'kdprune_preprocessing' metadata in it"),
      ((tmp_path / "junk.tflite", tmp_path / "keys.npz"), "is not a kdprune preprocessing"),
      ((model, tmp_path / "nothing.npz"), "no such file or folder"),
      ((model, tmp_path / "t.txt"), "expected an .npz, a .csv"),
      ((tmp_path / "none.tflite", tmp_path / "keys.npz"), "--model="),
  ]:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace(".", r"\.")):
      predict.predict(str(args[0]), str(args[1]), str(out))
    assert not out.exists()


# ----------------------------------------------------------------------------
# (b) A standardised CSV (classification).

@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("csv")
  d = data.DataConfig(dataset="csv:" + _csv_file(root / "table.csv"), target_column="label")
  fast = dict(batch_size=32, learning_rate=3e-3, patience=0)
  config = pipeline.PipelineConfig(
      teacher=teacher.TeacherConfig(data=d, model=ModelSpec("mlp", width=64, depth=1),
                                    train=configs.TrainConfig(epochs=4, **fast), progress="none"),
      student=student.StudentConfig(
          data=d, model=ModelSpec("mlp", width=64, depth=1),
          train=configs.TrainConfig(epochs=3, **fast), distill=configs.DistillConfig(),
          pruning=configs.PruningConfig(final_sparsity=0.5, begin="0.0", end="0.5"),
          progress="none"),
      qat=qat.QatConfig(data=d, train=configs.TrainConfig(epochs=1, batch_size=32,
                                                           learning_rate=1e-4, patience=0),
                        progress="none"),
      export=export.ExportConfig(data=d, latency_runs=3, latency_warmup=1,
                                 representative_examples=16))
  pipeline.run(config, str(root / "run"), log=lambda *_: None)
  return root / "run", config


@pytest.mark.slow
def test_predict_on_a_raw_csv_gives_the_reported_accuracy(csv_run, tmp_path):
  workdir, config = csv_run
  report, product = _product(workdir)
  spec = report["preprocessing"]
  assert spec["normalization"]["kind"] == "standardize" and len(spec["normalization"]["std"]) == 10
  arrays = sources.resolve(config.export.data).payload
  x, y = arrays["x_test"], arrays["y_test"]
  assert len(x) == report["test_examples"]
  # Columns in another order, the target and an extra column: features are taken by name.
  order = [9, 3, 0, 7, 1, 8, 2, 6, 4, 5]
  lines = ["note,label," + ",".join("f%d" % i for i in order)]
  lines += ["n%d,%d," % (i, y[i]) + ",".join("%.9g" % x[i, j] for j in order)
            for i in range(len(x))]
  (tmp_path / "raw.csv").write_text("\n".join(lines) + "\n")
  rows = _cli(tmp_path, workdir / "export" / "default" / "student_qat_int8.tflite",
              tmp_path / "raw.csv")
  pred = np.array([int(r["prediction"]) for r in rows])
  assert len(rows) == len(x) and rows[0]["input"] == "0"
  assert np.mean(pred == y) == product["test_accuracy"]

  (tmp_path / "missing.csv").write_text("f0,f1,label\n1,2,0\n")
  out = tmp_path / "never.csv"
  result = _run("--model=%s" % (workdir / "export" / "default"),
                "--input=%s" % (tmp_path / "missing.csv"), "--output=%s" % out, module=MODULE)
  _assert_one_line_error(result, "kdprune-predict", "missing feature column(s) f2, f3")
  assert not out.exists()


# ----------------------------------------------------------------------------
# (c) Regression from an npz.

@pytest.mark.slow
def test_predict_on_a_regression_npz_gives_the_reported_mse(regression_run, tmp_path):
  workdir, _, config = regression_run
  report, product = _product(workdir)
  assert report["preprocessing"]["task"] == "regression"
  assert report["preprocessing"]["outputs"] == {"kind": "values", "targets": 1}
  assert "class_names" not in report["preprocessing"]
  arrays = sources.resolve(config.export.data).payload
  x, y = arrays["x_test"], arrays["y_test"]
  np.savez(tmp_path / "raw.npz", x=x)
  rows = _cli(tmp_path, workdir / "export" / "default", tmp_path / "raw.npz")
  assert set(rows[0]) == {"input", "prediction"}
  pred = np.array([float(r["prediction"]) for r in rows])
  mse = float(np.mean((pred - y.reshape(-1).astype(np.float64)) ** 2))
  assert mse == pytest.approx(product["test_mse"], abs=1e-6)


# ----------------------------------------------------------------------------
# Raw inputs as training read them: dtype, decoding, resizing; the CSV on standard output.

_UINT8_IMAGES = {"task": "classification", "input": {"shape": [8, 8, 1], "dtype": "uint8"},
                 "normalization": {"kind": "scale", "scale": 1 / 255}, "resize": None}


@pytest.mark.parametrize("values,message", [
    (np.full((2, 8, 8), 0.5), "holds float64 values in [0.5, 0.5] (they look normalised already"),
    (np.full((2, 8, 8), 16.0), "holds float64 values in [16, 16]; the model was trained on raw "
                               "uint8 values (0 to 255): pass those, as integers"),
    (np.full((2, 8, 8), 300, np.int32), "holds values in [300, 300]; the model was trained on raw "
                                        "uint8 values"),
])
def test_an_npz_unlike_the_training_dtype_is_refused_not_rescaled(tmp_path, values, message):
  """A float .npz already in [0, 1] was divided by 255 again without a word; scikit-learn's digits
  (float64, 0-16) gave one class for every row."""
  np.savez(tmp_path / "x.npz", x=values)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                     .replace("[", r"\[").replace(".", r"\.")):
    predict.read_inputs(str(tmp_path / "x.npz"), _UINT8_IMAGES)


def test_an_npz_for_an_image_size_run_is_resized_as_training_resized(tmp_path):
  rng = np.random.default_rng(0)
  big = rng.integers(0, 256, (3, 16, 16)).astype(np.uint8)
  np.savez(tmp_path / "big.npz", x=big)
  spec = dict(_UINT8_IMAGES, resize={"size": [8, 8], "method": "bilinear", "antialias": True})
  _, x = predict.read_inputs(str(tmp_path / "big.npz"), spec)
  expected = tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
      big[..., None], (8, 8), antialias=True), 0, 255)), tf.uint8).numpy()
  assert x.dtype == np.uint8
  np.testing.assert_array_equal(x, expected)
  with pytest.raises(ConfigError, match="has shape"):  # no --image_size in training: refused
    predict.read_inputs(str(tmp_path / "big.npz"), _UINT8_IMAGES)


def test_a_colour_image_is_made_grey_by_the_decoder_as_training_did(tmp_path):
  """Training decodes image folders and TFRecords with decode_image(channels=1): a JPEG's grey is
  then its luma plane; decoding to RGB and tf.image.rgb_to_grayscale gave other values (up to a
  few levels apart)."""
  colours = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
  data = tf.io.encode_jpeg(colours, quality=90)
  tf.io.write_file(str(tmp_path / "colours.jpg"), data)
  _, x = predict.read_inputs(str(tmp_path / "colours.jpg"), _UINT8_IMAGES)
  trained = tf.io.decode_image(data, channels=1).numpy()
  old = tf.cast(tf.image.rgb_to_grayscale(tf.io.decode_image(data, channels=3)), tf.uint8).numpy()
  assert np.any(old != trained)  # the case is real
  np.testing.assert_array_equal(x[0], trained)


@pytest.mark.slow
def test_predict_without_output_writes_the_csv_to_standard_output(finished_run, tmp_path):
  workdir = finished_run[0]
  _, x, _ = _raw_test_split(finished_run[1].export.data)
  np.savez(tmp_path / "raw.npz", x=x[:5, ..., 0])
  result = _run("--model=%s" % (workdir / "export" / "default"),
                "--input=%s" % (tmp_path / "raw.npz"), module=MODULE)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[0] == "input,prediction,label,probability" and len(lines) == 6, result.stdout
  assert '"rows": 5' in result.stderr


@pytest.mark.slow
def test_inputs_far_beyond_the_training_range_get_a_warning(regression_run, tmp_path):
  """preprocessing.json records the raw training range of array sources; inputs in other units
  (here x 1000) are flagged on stderr, inputs like training's are not."""
  workdir, _, config = regression_run
  report, _ = _product(workdir)
  lo, hi = report["preprocessing"]["input"]["range"]
  arrays = sources.resolve(config.export.data).payload
  # The training rows' range (the validation rows carved from x_train are not in it).
  assert float(arrays["x_train"].min()) - 1e-6 <= lo < hi <= float(arrays["x_train"].max()) + 1e-6
  x = arrays["x_test"]
  assert predict.range_warning(x, report["preprocessing"]) == ""
  np.savez(tmp_path / "scaled.npz", x=x * 1000)
  result = _run("--model=%s" % (workdir / "export" / "default"),
                "--input=%s" % (tmp_path / "scaled.npz"), "--output=%s" % (tmp_path / "o.csv"),
                module=MODULE)
  assert result.returncode == 0, result.stderr
  assert "kdprune-predict: warning: the inputs span" in result.stderr
  assert "training's span [%.6g, %.6g]" % (lo, hi) in result.stderr


@pytest.mark.slow
def test_noembed_preprocessing_leaves_the_record_out_of_the_files(finished_run, tmp_path):
  """--noembed_preprocessing: the files lose the metadata (and its bytes), preprocessing.json stays
  beside them, and kdprune-predict on a lone file says why it cannot run it."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  from pipelines.runtime import execute  # pylint: disable=g-import-not-at-top
  src, config, _ = finished_run
  workdir = tmp_path / "run"
  shutil.copytree(src, workdir)
  _, before = _product(workdir)
  execute.run_stage(export.STAGE, dataclasses.replace(config.export, embed_preprocessing=False),
                    str(workdir), force=True)
  report, after = _product(workdir)
  data = (workdir / after["file"]).read_bytes()
  assert tflite_tools.read_metadata(data, "kdprune_preprocessing") is None
  record = (workdir / "export" / "default" / "preprocessing.json").read_bytes()
  assert after["tflite_bytes"] <= before["tflite_bytes"] - len(json.dumps(json.loads(record)))
  assert after["tflite_gzip_bytes"] < before["tflite_gzip_bytes"]
  assert json.loads(record) == report["preprocessing"]
  model, spec = predict.resolve_model(str(workdir / "export" / "default"))  # the folder: as ever
  assert spec == report["preprocessing"]
  lone = tmp_path / "lone.tflite"
  shutil.copy(workdir / after["file"], lone)
  with pytest.raises(ConfigError, match="unless --noembed_preprocessing"):
    predict.resolve_model(str(lone))

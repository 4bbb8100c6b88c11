"""Regression and tabular data: losses, CSV / npz / synthetic sources, and all four stages."""

import json

import numpy as np
import pytest

from models.compat import keras
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.data import bundle as data
from pipelines.data import sources, tabular
from pipelines.export import pareto as pareto_lib
from pipelines.export import tflite as tflite_tools
from pipelines.runtime import upstream
from pipelines.stages import export, qat, student
from pipelines.train import losses
from tests.conftest import SYNTHETIC  # the regression_run fixture's data
from tests.test_cli import _assert_one_line_error, _run


# ----------------------------------------------------------------------------
# Losses.


def test_regression_distillation_loss_blends_labels_and_teacher_by_alpha():
  s = np.array([[1.0], [2.0]], np.float32)
  t = np.array([[3.0], [2.0]], np.float32)
  y = np.array([[0.0], [4.0]], np.float32)
  parts = losses.regression_distillation_loss(s, t, y, alpha=0.3)
  assert float(parts["hard"]) == pytest.approx((1 + 4) / 2)
  assert float(parts["distill"]) == pytest.approx((4 + 0) / 2)
  assert float(parts["total"]) == pytest.approx(0.3 * 2.5 + 0.7 * 2.0)
  mae = losses.regression_distillation_loss(s, t, y, alpha=1.0, loss="mae")
  assert float(mae["total"]) == pytest.approx(float(mae["hard"])) == pytest.approx(1.5)
  # Labels given as [N] match predictions [N, 1].
  assert float(losses.regression_error(y[:, 0], s)) == pytest.approx(2.5)
  with pytest.raises(ValueError, match="huber"):
    losses.regression_error(y, s, "huber")


def test_trainer_regression_step_logs_the_parts_and_validates_on_the_loss():
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
  y = x[:, :1] * 2.0
  teacher_pred = y + 1.0  # a teacher that is off by one everywhere
  inputs = keras.Input((5,))
  model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
  from pipelines.train import distill  # pylint: disable=g-import-not-at-top
  trainer = distill.DistillationTrainer(model, alpha=0.25, task="regression")
  trainer.compile(optimizer=keras.optimizers.SGD(0.0))  # no update: the logs are the formula's
  logs = trainer.fit(x, (y, teacher_pred), batch_size=64, epochs=1, verbose=0,
                     validation_data=(x, y)).history
  pred = model(x).numpy()
  hard, soft = np.mean((pred - y) ** 2), np.mean((pred - teacher_pred) ** 2)
  assert logs["hard_loss"][0] == pytest.approx(hard, rel=1e-4)
  assert logs["distill_loss"][0] == pytest.approx(soft, rel=1e-4)
  assert logs["loss"][0] == pytest.approx(0.25 * hard + 0.75 * soft, rel=1e-4)
  assert logs["mae"][0] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-4)
  assert logs["val_loss"][0] == pytest.approx(hard, rel=1e-4)
  # Online: the teacher runs in the step and its predictions are the targets of the blend.
  t_inputs = keras.Input((5,))
  t_model = keras.Model(t_inputs, keras.layers.Dense(1)(t_inputs))
  online = distill.DistillationTrainer(model, teacher=t_model, alpha=0.0, task="regression")
  online.compile(optimizer=keras.optimizers.SGD(0.0))
  logs = online.fit(x, y, batch_size=64, epochs=1, verbose=0).history
  assert logs["loss"][0] == pytest.approx(np.mean((pred - t_model(x).numpy()) ** 2), rel=1e-4)


# ----------------------------------------------------------------------------
# Data.


def test_make_regression_matches_scikit_learn():
  sk = pytest.importorskip("sklearn.datasets")
  x_ref, y_ref = sk.make_regression(n_samples=80, n_features=30, n_informative=7, noise=3,
                                    random_state=5)
  x, y = tabular.make_regression(80, 30, 7, 3.0, seed=5)
  np.testing.assert_array_equal(x, x_ref)
  np.testing.assert_array_equal(y, y_ref)


def test_synthetic_regression_is_normalised_as_the_seed_and_split():
  config = data.DataConfig(dataset=SYNTHETIC, task="regression")
  source = sources.resolve(config)
  a = source.payload
  x = np.concatenate([a["x_train"], a["x_test"]])
  y = np.concatenate([a["y_train"], a["y_test"]])
  np.testing.assert_allclose(np.abs(x).max(axis=0), 1.0, rtol=1e-6)  # x / abs(x).max(axis=0)
  assert np.abs(y).max() == pytest.approx(1.0)                        # y / abs(y).max()
  assert (len(a["x_test"]), source.input_shape, source.num_classes) == (80, (12,), 1)
  bundle = data.load(config)
  assert bundle.num_examples == {"train": 288, "validation": 32, "test": 80}
  _, yb = next(iter(bundle.batches("train", 8)))
  assert yb.dtype.name == "float32" and tuple(yb.shape) == (8, 1)
  # Seeded: the same name gives the same data; another seed another.
  again = tabular.make_regression(50, 4, 2, 1.0, seed=0)
  np.testing.assert_array_equal(again[0], tabular.make_regression(50, 4, 2, 1.0, seed=0)[0])
  assert not np.array_equal(again[0], tabular.make_regression(50, 4, 2, 1.0, seed=1)[0])


def _write_csv(path, text):
  path.write_text(text)
  return str(path)


def test_csv_features_are_standardized_on_train_only(tmp_path):
  rng = np.random.default_rng(0)
  rows = ["a,b,price"] + ["%f,%f,%f" % (rng.normal(100, 20), rng.normal(-3, 0.1), i * 0.5)
                          for i in range(60)]
  path = _write_csv(tmp_path / "t.csv", "\n".join(rows) + "\n")
  config = data.DataConfig(dataset="csv:" + path, target_column="price", task="regression")
  bundle = data.load(config)
  assert bundle.source == "csv" and bundle.input_shape == (2,) and bundle.num_classes == 1
  assert sum(bundle.num_examples.values()) == 60 and bundle.num_examples["test"] == 12
  x_train = np.concatenate([x.numpy() for x, _ in bundle.batches("train", 64)])
  np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-4)
  np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-3)
  x_test = np.concatenate([x.numpy() for x, _ in bundle.batches("test", 64)])
  assert np.abs(x_test.mean(axis=0)).max() > 1e-3  # the test split was not used for the fit
  # The same file as classification: the target column holds class ids.
  labels = "\n".join(["f1,f2,label"] + ["%d,%d,%d" % (i, -i, i % 3) for i in range(30)])
  cls = data.load(data.DataConfig(dataset="csv:" + _write_csv(tmp_path / "c.csv", labels),
                                  target_column="label"))
  assert cls.num_classes == 3


@pytest.mark.parametrize("text,message", [
    ("a,b,y\n1,2,3\n4,x,6\n", "row 3, column 'b': 'x' is not a number"),
    ("a,b,y\n1,2,3\n4,,6\n", "row 3, column 'b': '' is not a number"),
    ("a,b,y\n1,2,3\n4,5\n", "row 3 has 2 cells but the header has 3 columns"),
    ("a,b,z\n1,2,3\n", "no column 'y' (--target_column); the header has: a, b, z"),
    ("a,b,y\n", "has a header but no data rows"),
    ("", "the file is empty"),
    ("a,b,y\n1,2,nan\n3,4,5\n5,6,7\n", "row 2, column 'y' is NaN or infinite"),
])
def test_csv_errors_are_one_line_and_name_the_problem(tmp_path, text, message):
  path = _write_csv(tmp_path / "bad.csv", text)
  with pytest.raises(ConfigError) as e:
    data.load(data.DataConfig(dataset="csv:" + path, target_column="y", task="regression"))
  assert str(e.value).startswith("--dataset=csv:%s: " % path)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_csv_classification_refuses_real_valued_targets(tmp_path):
  path = _write_csv(tmp_path / "r.csv", "a,y\n1,0.5\n2,1.5\n3,2.5\n4,0.1\n")
  with pytest.raises(ConfigError, match="non-integer values.*--task=regression"):
    sources.resolve(data.DataConfig(dataset="csv:" + path, target_column="y"))


def test_npz_regression_targets(tmp_path):
  from tests.conftest import write_npz  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  path = write_npz(tmp_path / "r.npz", shape=(5,), y_train=rng.normal(size=60),
                   y_test=rng.normal(size=(20, 1)))
  bundle = data.load(data.DataConfig(dataset="npz:" + path, task="regression",
                                     normalization="maxabs"))
  assert bundle.num_classes == 1 and bundle.input_shape == (5,)
  x, y = next(iter(bundle.batches("train", 100)))
  assert np.abs(x.numpy()).max() == pytest.approx(1.0) and y.shape[-1] == 1
  bad = write_npz(tmp_path / "nan.npz", shape=(5,), y_train=np.full(60, np.nan))
  with pytest.raises(ConfigError, match="y_train contains NaN or infinite targets"):
    sources.resolve(data.DataConfig(dataset="npz:" + bad, task="regression"))
  two = write_npz(tmp_path / "two.npz", shape=(5,), y_train=rng.normal(size=(60, 2)),
                  y_test=rng.normal(size=20))
  with pytest.raises(ConfigError, match="y_test has 1 targets per example but y_train has 2"):
    sources.resolve(data.DataConfig(dataset="npz:" + two, task="regression"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="synthetic_regression"), "is a regression dataset; pass --task=regression"),
    (dict(dataset="digits", task="regression"), "--task=regression needs tabular data"),
    (dict(dataset="csv:/x.csv"), "needs --target_column"),
    (dict(dataset="digits", target_column="y"), "--target_column is for --dataset=csv:"),
    (dict(dataset="digits", test_fraction=0.3), "--test_fraction is for csv:, images: (one folder"),
    (dict(dataset="digits", normalization="maxabs"), "--normalization=maxabs is for arrays"),
    (dict(dataset="synthetic_regression:n_samples=ten", task="regression"), "n_samples=ten is not"),
    (dict(dataset="synthetic_regression:depth=3", task="regression"), "'depth=3' must be one of"),
    (dict(dataset="synthetic_regression:n_informative=9,n_features=4", task="regression"),
     "n_informative must be in [0, n_features]"),
    (dict(dataset=SYNTHETIC, task="regression", num_classes=3), "--num_classes is for "),
    (dict(dataset=SYNTHETIC, task="regression", regression_loss="huber"), "--regression_loss"),
])
def test_regression_config_errors(kwargs, message):
  with pytest.raises(ConfigError) as e:
    sources.resolve(data.DataConfig(**kwargs))
  assert message in str(e.value)


def test_regression_refuses_val_accuracy_and_a_temperature():
  d = data.DataConfig(dataset=SYNTHETIC, task="regression")
  with pytest.raises(ConfigError, match="--student_monitor=val_accuracy has no meaning for "
                     "--task=regression"):
    student.StudentConfig(data=d, train=configs.TrainConfig(monitor="val_accuracy")).validate()
  with pytest.raises(ConfigError, match="--temperature=2.0 does not apply to --task=regression"):
    qat.QatConfig(data=d, distill=configs.DistillConfig(temperature=2.0)).validate()
  # Without distillation there is no temperature to refuse.
  qat.QatConfig(data=d, distill=configs.DistillConfig(enabled=False, temperature=2.0)).validate()


def test_new_data_fields_stay_out_of_fingerprints_at_their_default():
  for config in (data.DataConfig(), export.ExportConfig()):
    text = json.dumps(configs.resolved(config) if isinstance(config, data.DataConfig)
                      else config.resolved())
    for field in ("task", "regression_loss", "target_column", "test_fraction"):
      assert '"%s"' % field not in text
  assert configs.resolved(data.DataConfig(task="regression"))["task"] == "regression"


@pytest.mark.parametrize("module,args,fragments", [
    ("teacher", ["--dataset=" + SYNTHETIC, "--task=regression", "--teacher_monitor=val_accuracy"],
     ["--teacher_monitor=val_accuracy", "regression"]),
    ("student", ["--dataset=" + SYNTHETIC, "--task=regression", "--temperature=2"],
     ["--temperature=2.0 does not apply to --task=regression"]),
    ("teacher", ["--dataset=csv:/nonexistent/t.csv", "--task=regression"],
     ["needs --target_column"]),
    ("teacher", ["--dataset=csv:/nonexistent/t.csv", "--target_column=y"],
     ["--dataset=csv:/nonexistent/t.csv: no such file"]),
])
def test_cli_regression_errors_are_one_line(tmp_path, module, args, fragments):
  result = _run("--workdir=%s" % (tmp_path / "run"), *args, module="pipelines.cli." + module)
  _assert_one_line_error(result, "kdprune-" + module, *fragments)
  assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------
# TFLite and the four stages.


def test_int8_io_regression_output_is_dequantized():
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 6)).astype(np.float32)
  y = (x @ rng.normal(size=(6, 1)) * 3.0 + 5.0).astype(np.float32)  # targets far from [-1, 1]
  inputs = keras.Input((6,))
  model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(16, "relu")(inputs)))
  model.compile(keras.optimizers.Adam(0.05), "mse")
  model.fit(x, y, epochs=30, batch_size=50, verbose=0)
  keras_mse = float(np.mean((model.predict(x, verbose=0) - y) ** 2))
  batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]

  def rep():
    for row in x[:64]:
      yield [row[None]]
  tflite = tflite_tools.convert(model, "int8", representative=rep, int8_io=True)
  assert tflite_tools.Runner(tflite).interpreter.get_output_details()[0]["dtype"] == np.int8
  measured = tflite_tools.evaluate_regression(tflite, batches)
  assert measured["examples"] == 200
  # Dequantized with the output's scale: same units as the targets, close to the float model.
  assert measured["mse"] == pytest.approx(keras_mse, rel=0.5, abs=0.05 * float(np.var(y)))
  assert measured["mae"] < 0.2 * float(np.std(y))


@pytest.mark.slow
def test_regression_through_all_four_stages(regression_run):
  workdir, outcomes, _ = regression_run
  metrics = {o.name: o.entry["metrics"] for o in outcomes}
  t, s, q, e = (metrics[k] for k in ("teacher", "student/default", "qat/default",
                                     "export/default"))
  for m in (t, s, q):
    assert "test_accuracy" not in m and m["val_loss"] == pytest.approx(m["val_mse"])
    assert 0 < m["test_mse"] < 0.5 and 0 < m["test_mae"] < 1  # targets lie in [-1, 1]
  assert s["sparsity"] >= 0.745 and s["teacher_outputs"] == "cached"
  # The teacher's cached outputs are its predictions, one per training example, in float32 (a
  # prediction may exceed float16's range), in one store reused by QAT.
  from pipelines.train import teacher_store
  cached = list((workdir / "teacher" / "logits").glob("*/meta.json"))
  assert len(cached) == 1
  store = teacher_store.TeacherStore(str(cached[0].parent), json.loads(cached[0].read_text()))
  assert store.meta["dtype"] == "float32" and store.arrays().shape == (288, 1)
  report = json.loads((workdir / "export" / "default" / "report.json").read_text())
  assert report["task"] == "regression" and report["test_examples"] == 80
  models = {m["name"]: m for m in report["models"]}
  product = models["student_qat_int8"]
  # MSE measured on the int8 .tflite over the whole test set, close to the float student's.
  assert product["test_mse"] == pytest.approx(e["test_mse"])
  assert product["test_mse"] == pytest.approx(models["student_float"]["test_mse"], rel=0.25)
  assert models["student_float"]["test_mse"] == pytest.approx(s["test_mse"], rel=1e-3)
  assert product["keras_test_mse"] == pytest.approx(q["test_mse"])
  assert e["saved_model_test_mse"] == pytest.approx(q["test_mse"], rel=1e-3)
  assert report["comparison"]["mse_ratio"] == pytest.approx(
      product["test_mse"] / models["teacher_float"]["test_mse"], rel=1e-3)
  md = (workdir / "export" / "default" / "report.md").read_text()
  assert "| model | test MSE | test MAE |" in md and "test acc" not in md
  png = workdir / "export" / "default" / "mse_vs_size.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # A classification stage refuses this regression teacher before any work.
  with pytest.raises(ConfigError, match="trained for --task=regression, not --task=classification"):
    upstream.check_data_matches(str(workdir), "teacher", data.DataConfig(), "kdprune-teacher")


def test_pareto_front_for_mse_prefers_lower():
  pts = [{"tflite_gzip_bytes": 10, "test_mse": 0.20},
         {"tflite_gzip_bytes": 20, "test_mse": 0.10},
         {"tflite_gzip_bytes": 30, "test_mse": 0.15},   # bigger and worse than the 2nd
         {"tflite_gzip_bytes": 10, "test_mse": 0.25}]   # same size, worse than the 1st
  marks = [p["pareto"] for p in pareto_lib.pareto(pts, "test_mse", higher=False)]
  assert marks == [True, True, False, False]


@pytest.mark.slow
def test_regression_sweep_ranks_by_mse(regression_run):
  from pipelines.stages import sweep  # pylint: disable=g-import-not-at-top
  workdir, _, config = regression_run
  out = sweep.run(config, sweep.SweepConfig(sparsities=(0.5,)), str(workdir),
                  log=lambda *_: None)
  assert out["score"] == {"key": "test_mse", "label": "MSE", "higher_is_better": False}
  (entry,) = out["students"]
  assert entry["student"] == "s0.500_unstructured_w48" and entry["pareto"]
  assert 0 < entry["test_mse"] < 0.5 and "float_student_mse" in entry
  md = (workdir / "sweep" / "sweep.md").read_text()
  assert "int8 test MSE" in md and "Float teacher (.tflite): 0." in md

"""QAT that keeps the sparsity, TFLite conversion and measurement, and the export report."""

import gzip
import json

import numpy as np
import pytest

from models.compat import keras
from pipelines.config.errors import ConfigError, StageError
from pipelines.export import tflite as tflite_tools
from pipelines.quantize import qat as qat_lib
from pipelines.runtime import execute as stage
from pipelines.runtime import rundir
from pipelines.stages import qat
from tests.conftest import tiny_export_config, tiny_qat_config


def _sparse_cnn(seed=0, sparsity=0.9):
  """A small Conv->BN->ReLU->Dense model with a fixed fraction of its kernels zeroed."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((8, 8, 1))
  x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.ReLU(name="relu")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  outputs = keras.layers.Dense(10, name="logits")(x)
  model = keras.Model(inputs, outputs, name="student")
  rng = np.random.default_rng(seed)
  for layer in (model.get_layer("conv"), model.get_layer("logits")):
    weights = layer.get_weights()
    weights[0] = weights[0] * (rng.random(weights[0].shape) >= sparsity)
    if len(weights) > 1:  # a nonzero bias (the converter drops all-zero ones)
      weights[1] = rng.normal(size=weights[1].shape).astype(np.float32)
    layer.set_weights(weights)
  return model


def _data(n=128, seed=1):
  rng = np.random.default_rng(seed)
  return rng.random((n, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, n)


def _train(qmodel, x, y, lr=0.05, epochs=3):
  qmodel.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(
      from_logits=True))
  qmodel.fit(x, y, batch_size=32, epochs=epochs, verbose=0)


def _zeros(model, names=("conv", "logits")):
  return {n: int(np.sum(model.get_layer(n).get_weights()[0] == 0)) for n in names}


@pytest.mark.parametrize("scheme", ["prune_preserve", "default"])
def test_qat_keeps_the_zeros_after_remasking(scheme):
  model = _sparse_cnn()
  before = _zeros(model)
  masks = qat_lib.zero_masks(model, ["conv", "logits"])
  qmodel = qat_lib.quantize(model, scheme)
  x, y = _data()
  _train(qmodel, x, y)
  drifted = qat_lib.remask(qmodel, masks)
  if scheme == "default":  # plain QAT trains the zeros too: the re-masking has work to do
    assert sum(drifted.values()) > 0
  view = qat_lib.float_view(_sparse_cnn(seed=5, sparsity=0.0), qmodel)
  after = _zeros(view)
  assert all(after[n] >= before[n] for n in before), (before, after)
  # And the int8 file holds at least those zeros, read from its weight buffers.
  info = tflite_tools.inspect_weights(tflite_tools.convert(qmodel, "qat"))
  assert info["weight_zeros"] >= sum(before.values())
  assert info["weight_dtypes"] == ["int8"]


def test_prune_preserve_outputs_do_not_depend_on_drifted_weights():
  # PQAT multiplies the kernels by the mask in the forward pass: whatever the
  # optimizer does to pruned weights, the fake-quantized model ignores them.
  model = _sparse_cnn()
  masks = qat_lib.zero_masks(model, ["conv", "logits"])
  qmodel = qat_lib.quantize(model, "prune_preserve")
  x, _ = _data(16)
  reference = qmodel(x, training=False).numpy()
  kernel = [v for v in qmodel.weights if v.name == "logits/kernel:0"][0]
  kernel.assign(kernel.numpy() + (~masks["logits/kernel:0"]) * 5.0)
  np.testing.assert_allclose(qmodel(x, training=False).numpy(), reference, atol=1e-5)


def test_inspect_weights_counts_exact_zeros_and_params():
  model = _sparse_cnn(sparsity=0.75)
  expected_zeros = sum(_zeros(model).values())
  # Float: BN folds into the conv kernel (zeros stay zero); biases are parameters, not weights.
  info = tflite_tools.inspect_weights(tflite_tools.convert(model, "float"))
  assert info["weights"] == 3 * 3 * 1 * 8 + 8 * 8 * 8 * 10
  assert info["weight_zeros"] == expected_zeros
  assert info["sparsity"] == pytest.approx(expected_zeros / info["weights"], abs=1e-6)
  assert info["params"] == info["weights"] + 8 + 10  # folded BN bias + dense bias
  assert info["weight_dtypes"] == ["float32"]
  dynamic = tflite_tools.inspect_weights(tflite_tools.convert(model, "dynamic"))
  # Dynamic range quantizes the large kernel; tensors under 1024 elements stay float32.
  assert [l["dtype"] for l in dynamic["layers"]] == ["float32", "int8"]
  assert dynamic["weights"] == info["weights"]
  assert dynamic["weight_zeros"] >= expected_zeros  # tiny weights may also round to 0


def test_tflite_accuracy_equals_keras_accuracy():
  model = _sparse_cnn(sparsity=0.5)
  x, y = _data(200)
  batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)]
  keras_logits = model.predict(x, verbose=0)
  float_eval = tflite_tools.evaluate(tflite_tools.convert(model, "float"), batches)
  assert float_eval["examples"] == 200
  assert float_eval["accuracy"] == pytest.approx(np.mean(keras_logits.argmax(-1) == y), abs=1e-9)

  qmodel = qat_lib.quantize(model, "prune_preserve")
  _train(qmodel, x, y, lr=0.01, epochs=1)
  q_logits = qmodel.predict(x, verbose=0)
  keras_acc = np.mean(q_logits.argmax(-1) == y)
  for int8_io in (False, True):
    data = tflite_tools.convert(qmodel, "qat", int8_io=int8_io)
    runner = tflite_tools.Runner(data)
    lite_logits = runner(x)
    # Same predictions up to int8 rounding: a couple of near-ties may flip.
    assert np.mean(lite_logits.argmax(-1) == q_logits.argmax(-1)) >= 0.98
    lite_acc = tflite_tools.evaluate(data, batches)["accuracy"]
    assert abs(lite_acc - keras_acc) <= 2 / len(y)


def test_latency_is_measured_at_batch_one():
  model = _sparse_cnn()
  data = tflite_tools.convert(model, "float")
  lat = tflite_tools.latency(data, _data(1)[0][0], runs=7, warmup=2)
  assert lat["runs"] == 7 and lat["threads"] == 1
  assert 0 < lat["median"] <= lat["p90"]


def test_export_report_is_complete_and_consistent(finished_run):
  workdir, _, outcomes = finished_run
  d = workdir / "export" / "default"
  report = json.loads((d / "report.json").read_text())
  names = [m["name"] for m in report["models"]]
  assert names == ["teacher_float", "student_float", "student_ptq_dynamic", "student_ptq_int8",
                   "student_qat_int8"]
  student = json.loads((workdir / "student" / "default" / "metrics.json").read_text())
  pruned_zeros = sum(e["zeros"] for e in student["pruning"]["layers"].values())
  for m in report["models"]:
    for key in ("test_accuracy", "tflite_bytes", "tflite_gzip_bytes", "latency_ms", "sparsity",
                "params", "nonzero_params"):
      assert m[key] is not None, (m["name"], key)
    data = (workdir / m["file"]).read_bytes()
    assert m["tflite_bytes"] == len(data)
    assert abs(m["tflite_gzip_bytes"] - len(gzip.compress(data, 9))) <= 32
    assert m["sparsity"] == pytest.approx(m["weight_zeros"] / m["weights"], abs=1e-6)
    assert m["nonzero_params"] <= m["params"]
    assert 0 < m["latency_ms"] <= m["latency_p90_ms"]
    if m["name"].startswith("student"):
      assert m["weight_zeros"] >= pruned_zeros
  product = report["models"][-1]
  assert product["name"] == report["product"] == "student_qat_int8"
  assert product["weight_dtypes"] == ["int8"]
  assert product["test_accuracy"] > 0.5
  # The float student file predicts what the Keras student did.
  assert report["models"][1]["test_accuracy"] == pytest.approx(student["test_accuracy"], abs=1e-6)
  c = report["comparison"]
  assert c["gzip_ratio"] == pytest.approx(
      report["models"][0]["tflite_gzip_bytes"] / product["tflite_gzip_bytes"], rel=1e-3)
  assert [s["what"].split(" ")[0] for s in report["story"]] == ["float", "pruned", "QAT", "int8"]
  assert report["saved_model"]["test_accuracy"] == pytest.approx(
      json.loads((workdir / "qat" / "default" / "metrics.json").read_text())["test_accuracy"],
      abs=2 / report["test_examples"])
  md = (d / "report.md").read_text()
  for m in report["models"]:
    assert "| %s |" % m["name"] in md
  assert (d / "accuracy_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert (d / "saved_model" / "saved_model.pb").is_file()
  assert list((d / "tb").glob("events.out.tfevents.*"))
  assert outcomes[-1].entry["metrics"]["tflite_gzip_bytes"] == product["tflite_gzip_bytes"]


def test_qat_metrics_and_artifacts(finished_run):
  workdir, _, _ = finished_run
  d = workdir / "qat" / "default"
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["scheme"] == "prune_preserve" and metrics["teacher_outputs"] == "cached"
  assert metrics["sparsity"] >= metrics["target_sparsity"] - 0.005
  assert (d / "model.weights.h5").is_file() and list((d / "tb").rglob("events.out.tfevents.*"))
  # The teacher ran over the training set once: QAT read the logits the student stage saved.
  saved = list((workdir / "teacher" / "logits").glob("*.npy"))
  assert len(saved) == 1 and np.load(saved[0]).shape == (1294, 10)
  import datetime
  qat_started = datetime.datetime.fromisoformat(
      rundir.RunDir(str(workdir)).entry("qat/default")["started"]).timestamp()
  assert saved[0].stat().st_mtime < qat_started  # written by the student stage, only read by QAT
  rebuilt = qat.load_model(str(workdir))
  assert any("Quantize" in type(l).__name__ for l in rebuilt.layers)


def test_qat_fails_loudly_when_the_sparsity_falls(finished_run, tmp_path, monkeypatch):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  teacher_model = (workdir / "teacher" / "model.keras").read_bytes()
  monkeypatch.setattr(qat_lib, "remask", lambda qmodel, masks: {})  # as if drift were not repaired
  config = tiny_qat_config(scheme="default", epochs=2, learning_rate=0.5, optimizer="sgd")
  with pytest.raises(StageError, match=r"sparsity .* is below the target .*QAT moved weights"):
    stage.execute(config.stage, qat.run, config, str(workdir),
                  qat.fingerprint_inputs(config, str(workdir)), force=True, log=lambda *_: None)
  entry = rundir.RunDir(str(workdir)).entry("qat/default")
  assert entry["status"] == "failed"
  assert (workdir / "teacher" / "model.keras").read_bytes() == teacher_model


def test_qat_and_export_need_their_upstream_stage(tmp_path):
  with pytest.raises(ConfigError, match=r"no finished student/default in .*run kdprune-student"):
    qat.fingerprint_inputs(tiny_qat_config(), str(tmp_path))
  from pipelines.stages import export
  with pytest.raises(ConfigError, match=r"no finished qat/default in .*run kdprune-qat"):
    export.fingerprint_inputs(tiny_export_config(), str(tmp_path))
  assert not list(tmp_path.iterdir())

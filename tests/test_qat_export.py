"""QAT that keeps the sparsity, TFLite conversion and measurement, and the export report."""

import dataclasses
import gzip
import json
import os

import numpy as np
import pytest

from models.compat import keras, tf
from pipelines.config.errors import ConfigError, StageError
from pipelines.export import tflite as tflite_tools
from pipelines.quantize import backend as quantize_backend
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


def test_converted_files_name_each_tensor_by_its_first_name_piece():
  """The converter names a fused tensor after every op in it; kdprune keeps the first piece only
  (the layer is still known: the zero check maps weights to layers by it), a smaller file with
  the same graph, weights and outputs."""
  model = _sparse_cnn(sparsity=0.75)
  x, _ = _data(16)
  data = tflite_tools.convert(model, "int8", representative=lambda: ([x[i:i + 1]] for i in range(16)))
  names = [t["name"] for t in tflite_tools.inspect_model(data)["tensors"]]
  assert names and not any(";" in n for n in names)
  layers = [tflite_tools._layer_of(l["name"], {"conv": {}, "logits": {}})  # pylint: disable=protected-access
            for l in tflite_tools.inspect_weights(data)["layers"]]
  assert layers == ["conv", "logits"]
  # What the converter gave: the long names (the raw schema round trip keeps them).
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(16))
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  raw = bytes(converter.convert())
  short = tflite_tools.short_tensor_names(raw)
  assert any(";" in t["name"] for t in tflite_tools.inspect_model(raw)["tensors"])
  assert tflite_tools.gzip_size(short) < tflite_tools.gzip_size(raw)
  assert tflite_tools.short_tensor_names(short) == short  # nothing left to shorten
  run_raw, run_short = tflite_tools.Runner(raw), tflite_tools.Runner(short)
  np.testing.assert_array_equal(run_raw(x[:4]), run_short(x[:4]))


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


@pytest.mark.slow
def test_the_serving_savedmodel_converts_to_what_the_keras_model_converts_to(tmp_path):
  # The export converts every file from a one-function SavedModel (save_serving), never through
  # TF's from_keras_model (which saves the whole Keras object first): the same ops, the same outputs.
  qmodel = qat_lib.quantize(_sparse_cnn(sparsity=0.5), "prune_preserve")
  x, y = _data(64)
  _train(qmodel, x, y, lr=0.01, epochs=1)
  path = str(tmp_path / "saved_model")
  tflite_tools.save_serving(qmodel, path)
  signature = tf.saved_model.load(path).signatures["serving_default"]
  served = list(signature(tf.constant(x)).values())[0].numpy()
  np.testing.assert_allclose(served, qmodel.predict(x, verbose=0), atol=1e-5)
  for int8_io in (False, True):
    converter = tf.lite.TFLiteConverter.from_keras_model(qmodel)  # TF's own route, as reference
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
      converter.inference_input_type = converter.inference_output_type = tf.int8
    direct = bytes(converter.convert())
    via = tflite_tools.convert_saved_model(path, "qat", int8_io=int8_io)
    ours = tflite_tools.convert(qmodel, "qat", int8_io=int8_io)
    for data in (via, ours):
      assert tflite_tools.inspect_ops(data)["by_op"] == tflite_tools.inspect_ops(direct)["by_op"]
      np.testing.assert_array_equal(tflite_tools.Runner(data)(x), tflite_tools.Runner(direct)(x))


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
  from pipelines.train import teacher_store
  saved = list((workdir / "teacher" / "logits").glob("*/meta.json"))
  assert len(saved) == 1
  store = teacher_store.TeacherStore(str(saved[0].parent), json.loads(saved[0].read_text()))
  assert store.arrays().shape == (1294, 10) and store.nbytes() == 1294 * 10 * 2  # float16
  import datetime
  qat_started = datetime.datetime.fromisoformat(
      rundir.RunDir(str(workdir)).entry("qat/default")["started"]).timestamp()
  for path in [saved[0]] + [saved[0].parent / f for f in os.listdir(saved[0].parent)]:
    assert path.stat().st_mtime < qat_started  # written by the student stage, only read by QAT
  rebuilt = qat.load_model(str(workdir))
  assert any("Quantize" in type(l).__name__ for l in rebuilt.layers)


def test_qat_fails_loudly_when_the_sparsity_falls(finished_run, tmp_path, monkeypatch):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  teacher_model = (workdir / "teacher" / "model.keras").read_bytes()
  monkeypatch.setattr(quantize_backend, "TFMOT", dataclasses.replace(  # drift not repaired
      quantize_backend.TFMOT, remask=lambda qmodel, masks: {}))
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


def _qat_model_with_a_float_op():
  """TFLite bytes of a QAT model whose middle op (a SIN, left unquantized) the converter keeps in
  float, silently: dense (int8) -> DEQUANTIZE -> SIN -> float dense -> QUANTIZE -> DEQUANTIZE."""
  import tensorflow_model_optimization as tfmot

  from models.compat import keras, tf
  qk = tfmot.quantization.keras

  NoQuantize = qat_lib.NoOpQuantizeConfig  # quantizes nothing: the SIN stays float

  class Sine(keras.layers.Layer):
    def call(self, x):
      return tf.math.sin(x)

  inputs = keras.Input((8,))
  x = qk.quantize_annotate_layer(keras.layers.Dense(16, name="dense"))(inputs)
  x = qk.quantize_annotate_layer(Sine(name="sine"), NoQuantize())(x)
  x = qk.quantize_annotate_layer(keras.layers.Dense(4, name="logits"))(x)
  with qk.quantize_scope({"NoOpQuantizeConfig": NoQuantize, "Sine": Sine}):
    qmodel = qk.quantize_apply(keras.Model(inputs, x))
  return tflite_tools.convert(qmodel, "qat")


def test_inspect_ops_finds_the_ops_left_in_float():
  info = tflite_tools.inspect_ops(_qat_model_with_a_float_op())
  assert not info["integer_only"]
  assert [o["op"] for o in info["ops"]][:4] == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE", "SIN"]
  assert "#3 SIN (float32 -> float32)" in info["float_ops"]
  # The QUANTIZE of the input (#0) and the DEQUANTIZE of the output (#6) are the allowed edges;
  # the same ops inside the model are not.
  assert [f.split(" (")[0] for f in info["float_ops"]] == [
      "#2 DEQUANTIZE", "#3 SIN", "#4 FULLY_CONNECTED", "#5 QUANTIZE"], info["float_ops"]
  assert info["ops"][6]["op"] == "DEQUANTIZE" and len(info["ops"]) == 7


def test_export_refuses_a_product_with_a_float_op(finished_run, tmp_path, monkeypatch):
  import shutil

  from pipelines.stages import export
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  crafted = _qat_model_with_a_float_op()
  # The product is converted from the export's SavedModel: that conversion yields the crafted file.
  monkeypatch.setattr(tflite_tools, "convert_saved_model", lambda path, mode, **kw: crafted)
  config = tiny_export_config()
  with pytest.raises(StageError, match=r"student_qat_int8.tflite is not integer-only: .*"
                                       r"#3 SIN \(float32 -> float32\)"):
    stage.execute(config.stage, export.run, config, str(workdir),
                  export.fingerprint_inputs(config, str(workdir)), force=True, log=lambda *_: None)


def test_the_product_is_checked_integer_only_and_its_ops_reported(finished_run):
  workdir, _, _ = finished_run
  report = json.loads((workdir / "export" / "default" / "report.json").read_text())
  ops = report["product_ops"]
  assert ops["integer_only"] and ops["by_op"]["FULLY_CONNECTED"] == 2
  assert ops["ops"][0]["op"] == "QUANTIZE" and ops["ops"][0]["inputs"] == ["float32"]
  assert ops["ops"][-1]["op"] == "DEQUANTIZE" and ops["ops"][-1]["outputs"] == ["float32"]
  assert all(o["integer"] for o in ops["ops"][1:-1])
  product = [m for m in report["models"] if m["name"] == "student_qat_int8"][0]
  assert product["integer_only"] and product["op_counts"] == ops["by_op"]
  student_float = [m for m in report["models"] if m["name"] == "student_float"][0]
  assert not student_float["integer_only"]


def test_export_zero_check_is_per_pruned_layer():
  """dense_1 lost 277 of its zeros; a dense layer's int8 rounding zeros (400) make up the total, so
  the pooled check (file zeros >= student zeros) passed; the per-layer check names dense_1."""
  student = {"dense_1": {"weights": 4096, "zeros": 3277}, "logits": {"weights": 640, "zeros": 512}}
  file_layers = [
      {"name": "student/quant_dense_1/MatMul", "zeros": 3000},
      {"name": "student/quant_logits/MatMul;student/quant_logits/LastValueQuant/FakeQuant",
       "zeros": 512},
      {"name": "student/quant_dense_12/MatMul", "zeros": 400},  # kept dense: rounding zeros
  ]
  assert sum(e["zeros"] for e in file_layers) >= sum(e["zeros"] for e in student.values())
  assert tflite_tools.lost_zeros(file_layers, student) == [("dense_1", 3000, 3277)]
  file_layers[0]["zeros"] = 3277
  assert tflite_tools.lost_zeros(file_layers, student) == []
  # A pruned layer no tensor is named after is compared with the unnamed tensors.
  renamed = [dict(file_layers[0], name="fused_0"), file_layers[1]]
  assert tflite_tools.lost_zeros(renamed, student) == []
  renamed[0]["zeros"] = 10
  assert tflite_tools.lost_zeros(renamed, student) == [("dense_1", 10, 3277)]


def test_qat_records_each_pruned_layers_drift_before_remasking(finished_run, tmp_path):
  import shutil
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  config = tiny_qat_config(scheme="default", epochs=2, learning_rate=0.5, optimizer="sgd")
  outcome = stage.execute(config.stage, qat.run, config, str(workdir),
                          qat.fingerprint_inputs(config, str(workdir)), force=True,
                          log=lambda *_: None)
  metrics = json.loads((workdir / "qat" / "default" / "metrics.json").read_text())
  student = json.loads((workdir / "student" / "default" / "metrics.json").read_text())
  pruned = student["pruning"]["layers"]
  before, drift = metrics["sparsity_before_remask"], metrics["drift"]
  assert set(before) == set(drift) == set(pruned)
  for name, layer in pruned.items():
    # The zeros QAT moved, per layer: what re-masking then restores.
    assert before[name] == pytest.approx(layer["sparsity"] - drift[name], abs=2e-6)
  assert metrics["max_drift"] == max(drift.values()) > 0
  assert sum(round(d * pruned[n]["weights"]) for n, d in drift.items()) == \
      metrics["remasked_weights"]
  assert outcome.entry["metrics"]["max_drift"] == metrics["max_drift"]
  assert metrics["sparsity"] >= metrics["target_sparsity"] - 0.005  # checked after re-masking


def test_export_converts_the_qat_stages_savedmodel_without_rebuilding_the_qat_model(
    finished_run, tmp_path, monkeypatch):
  """The QAT stage writes its serving SavedModel; the export copies and converts it, and never
  rebuilds the QAT model with tfmot (9.6 s of a MobileNetV2 export). A QAT run recorded before
  the QAT stage wrote one is still exported, by rebuilding."""
  import shutil

  from pipelines.stages import export
  workdir = tmp_path / "copy"
  shutil.copytree(finished_run[0], workdir)
  entry = json.loads((workdir / "manifest.json").read_text())["stages"]["qat/default"]
  assert entry["artifacts"]["saved_model"] == "qat/default/saved_model"
  assert (workdir / "qat" / "default" / "saved_model" / "saved_model.pb").is_file()
  built = []

  def refuse(*args, **kwargs):
    built.append(args)
    raise AssertionError("the export rebuilt the QAT model")
  monkeypatch.setattr(quantize_backend, "TFMOT", dataclasses.replace(quantize_backend.TFMOT,
                                                                      rebuild=refuse))
  config = tiny_export_config()
  stage.execute(config.stage, export.run, config, str(workdir),
                export.fingerprint_inputs(config, str(workdir)), force=True, log=lambda *_: None)
  assert built == []
  ours = json.loads((workdir / "export" / "default" / "report.json").read_text())
  theirs = json.loads((finished_run[0] / "export" / "default" / "report.json").read_text())
  product = {m["name"]: m for m in ours["models"]}["student_qat_int8"]
  before = {m["name"]: m for m in theirs["models"]}["student_qat_int8"]
  for key in ("test_accuracy", "tflite_bytes", "weight_zeros", "op_counts"):
    assert product[key] == before[key], key
  assert ours["saved_model"]["test_accuracy"] == product["test_accuracy"]

  # A QAT entry without the SavedModel (written before the QAT stage saved one): rebuilt.
  monkeypatch.undo()
  manifest = json.loads((workdir / "manifest.json").read_text())
  del manifest["stages"]["qat/default"]["artifacts"]["saved_model"]
  (workdir / "manifest.json").write_text(json.dumps(manifest))
  shutil.rmtree(workdir / "qat" / "default" / "saved_model")
  rebuilt = []
  real = quantize_backend.TFMOT.rebuild
  monkeypatch.setattr(quantize_backend, "TFMOT", dataclasses.replace(
      quantize_backend.TFMOT, rebuild=lambda *a, **k: rebuilt.append(1) or real(*a, **k)))
  stage.execute(config.stage, export.run, config, str(workdir),
                export.fingerprint_inputs(config, str(workdir)), force=True, log=lambda *_: None)
  assert rebuilt == [1]
  again = json.loads((workdir / "export" / "default" / "report.json").read_text())
  assert {m["name"]: m for m in again["models"]}["student_qat_int8"]["test_accuracy"] == \
      product["test_accuracy"]


def test_a_conversion_leaves_the_objects_alive_before_it_out_of_its_full_collection(monkeypatch):
  """TF's SavedModel converter ends with a full ``gc.collect()``; in a long process that walk of
  every live object was most of a small model's conversion. The objects alive before the
  conversion are frozen for it, and back with the collector afterwards."""
  import gc
  seen = []
  real = gc.collect
  monkeypatch.setattr(gc, "collect", lambda *a: seen.append(gc.get_freeze_count()) or real(*a))
  alive = len(gc.get_objects())
  model = _sparse_cnn()
  tflite_tools.convert(model, "float")
  assert seen and min(seen) >= alive  # everything alive before was out of the collection
  assert gc.get_freeze_count() == 0


def test_the_comparison_says_slower_when_the_product_is_slower():
  """A product 5x slower than its reference read "0.2x lower batch-1 latency"."""
  from pipelines.export import report as report_lib
  comparison = {"product": "student_qat_int8", "reference": "teacher_float",
                "accuracy_delta_points": -0.5, "gzip_ratio": 40.0, "latency_ratio": 0.2,
                "product_sparsity": 0.9}
  lines = report_lib.comparison_lines({"comparison": comparison})
  assert "40.0x smaller gzipped, 5.0x slower at batch 1" in lines[0]
  assert lines[1].startswith("Warning: student_qat_int8 is slower than teacher_float")
  lines = report_lib.comparison_lines({"comparison": dict(comparison, latency_ratio=4.0,
                                                          gzip_ratio=0.5)})
  assert "2.0x larger gzipped, 4.0x faster at batch 1" in lines[0] and len(lines) == 1


def test_the_report_and_the_closing_table_end_with_the_verdict(finished_run):
  """The quickstart's report said "-2.23 accuracy points" and nothing else, with the student's
  best epoch its last: report.md, the export's table and the pipeline's closing table now end
  with the verdict and the next steps (each rule: tests/test_verdict.py)."""
  from pipelines.export import report as report_lib
  workdir, _, outcomes = finished_run
  report = json.loads((workdir / "export" / "default" / "report.json").read_text())
  assert report["verdict"].startswith("Ship it: " if report["ship"] else "Not yet: ")
  said = report_lib.verdict_lines(report)
  assert said[0] == "Verdict: " + report["verdict"]
  md = (workdir / "export" / "default" / "report.md").read_text().rstrip("\n").splitlines()
  last = md.index("## Verdict and next steps")
  assert md[last + 2] == "**Verdict: %s**" % report["verdict"]
  assert md[last + 3:] == ([""] + ["- " + s for s in report["next_steps"]] if report[
      "next_steps"] else [])
  assert report_lib.table(str(workdir)).splitlines()[-len(said):] == said
  closing = report_lib.pipeline_summary(str(workdir), outcomes, 1.0).rstrip("\n").splitlines()
  assert closing[-len(said):] == ["  " + l for l in said]
  assert "Verdict:" not in report_lib.table(str(workdir), verdict=False)

"""Export targets (``--target``): the runtimes' rules checked at export, TFLite Micro's own run,
the sparse float file, the latency with and without XNNPACK, and kdprune-predict on every file."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from models.compat import keras
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.export import predict, targets, tflm
from pipelines.export import tflite as tflite_tools
from pipelines.runtime import execute
from pipelines.stages import export
from tests.conftest import SYNTHETIC, tiny_export_config
from tests.test_cli import _assert_one_line_error, _run
from tests.test_predict import _raw_test_split

ALL = configs.TARGETS


# ----------------------------------------------------------------------------
# The flags and their checks, before TensorFlow.

@pytest.mark.parametrize("names,message", [
    (("bogus",), "--target=bogus is not one of litert, edgetpu, tflm, xnnpack_sparse"),
    ((), "--target is empty"),
    (("tflm", "tflm"), "--target names tflm twice"),
])
def test_a_bad_target_is_refused_in_one_line(names, message):
  with pytest.raises(ConfigError, match=message):
    export.ExportConfig(targets=names).validate()


def test_target_flags_take_repeats_and_lists_in_one_order():
  from absl import flags
  from pipelines.cli import flags as cli_flags
  cli_flags.define_flags()
  for argv, want, io in (
      ([], ("litert",), (False, "int8")),
      (["--target=tflm", "--target=litert,edgetpu"], ("litert", "edgetpu", "tflm"), None),
      (["--target=xnnpack_sparse", "--int8_io"], ("xnnpack_sparse",), (True, "int8")),
      (["--int8_io=uint8"], ("litert",), (True, "uint8")),
      (["--noint8_io"], ("litert",), (False, "int8"))):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog"] + argv)
    config = cli_flags.export_config_from_flags()
    assert config.targets == want, argv
    if io:
      assert (config.int8_io, config.int8_io_type) == io, argv
  flags.FLAGS.unparse_flags()
  with pytest.raises(flags.IllegalFlagValueError):
    flags.FLAGS(["prog", "--int8_io=int4"])
  flags.FLAGS.unparse_flags()
  # A default export keeps its fingerprint: the new fields drop out at their defaults.
  assert "targets" not in export.ExportConfig().resolved()
  assert "int8_io_type" not in export.ExportConfig().resolved()
  assert tuple(export.ExportConfig(targets=ALL).resolved()["targets"]) == ALL


def test_the_records_follow_the_configs_names():
  assert tuple(t.name for t in targets.TARGET_RECORDS) == configs.TARGETS
  assert targets.get("litert").file == configs.PRODUCT
  assert len({t.file for t in targets.TARGET_RECORDS}) == len(configs.TARGETS)


@pytest.mark.parametrize("target", ["edgetpu", "tflm"])
def test_a_regression_student_is_refused_by_integer_output_targets(target):
  config = dataclasses.replace(export.ExportConfig(), targets=("litert", target), data=(
      configs.DataConfig(dataset=SYNTHETIC, task="regression")))
  with pytest.raises(ConfigError, match="--target=%s cannot take this student: its output is a "
                                        "regression value" % target):
    export.validate(config)
  export.validate(dataclasses.replace(config, targets=("litert", "xnnpack_sparse")))


def test_the_pipeline_refuses_an_edgetpu_regression_student_before_anything_is_written(tmp_path):
  workdir = tmp_path / "run"
  result = _run("--workdir=%s" % workdir, "--dataset=synthetic_regression",
                "--task=regression", "--target=edgetpu", module="pipelines.cli.pipeline")
  _assert_one_line_error(result, "kdprune-pipeline", "--target=edgetpu",
                         "regression value", "must stay float")
  assert not workdir.exists()


def test_a_missing_tflite_micro_says_how_to_add_it(monkeypatch):
  import importlib.util
  find = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == tflm.MODULE else find(name, *a))
  line = targets.refusal_before_work("tflm", "classification")
  assert line.startswith("--target=tflm: TFLite Micro's Python interpreter is not installed")
  assert 'pip install "kdprune[tflm]"' in line
  assert targets.refusal_before_work("edgetpu", "classification") is None


# ----------------------------------------------------------------------------
# The rules, read from a file's description.

def _op(index, op, inputs, outputs, activation=None):
  return {"index": str(index), "op": op, "inputs": inputs, "outputs": outputs,
          "activation": activation, "stride": None, "kernel": None}


def _model(ops=(("CONV_2D", ["int8"] * 2, ["int8"]),), io="int8", dynamic=(), shapes=()):
  """A file's description as :func:`tflite_tools.inspect_model` gives it."""
  tensor = {"dtype": io, "shape": [1, 4], "shape_signature": [1, 4]}
  return {"inputs": [dict(tensor, name="in")], "outputs": [dict(tensor, name="out")],
          "dynamic": list(dynamic), "sparse_tensors": 0,
          "tensors": [{"name": "t%d" % i, "dtype": io, "shape": s} for i, s in enumerate(shapes)],
          "ops": [_op(i, *op) for i, op in enumerate(ops)]}


WEIGHTS = {"sparse_tensors": 0, "sparsity": 0.5, "weight_dtypes": ["int8"]}


@pytest.mark.parametrize("target,model,io,message", [
    ("edgetpu", _model(io="float32"), "int8",
     "--target=edgetpu: input tensor 'in' is float32; the Edge TPU needs int8 inputs"),
    ("edgetpu", _model(), "uint8", "input tensor 'in' is int8; the Edge TPU needs uint8"),
    ("edgetpu", _model(ops=[("CONV_2D", ["int8"], ["int8"]), ("HARD_SWISH", ["int8"], ["int8"])]),
     "int8", "op #1 HARD_SWISH (int8 -> int8) is not in coral.ai Edge TPU supported operations"),
    ("edgetpu", _model(ops=[("SIN", ["float32"], ["float32"])]), "int8",
     "op #0 SIN computes on float32 tensors; the Edge TPU runs integer ops only"),
    ("edgetpu", _model(ops=[("MAX_POOL_2D", ["int8"], ["int8"], "RELU")]), "int8",
     "op #0 MAX_POOL_2D has a fused RELU activation"),
    ("edgetpu", _model(dynamic=["serving_default_inputs:0"]), "int8",
     "tensor 'serving_default_inputs:0' has a dynamic dimension"),
    ("edgetpu", _model(shapes=[[2, 4, 4, 8]]), "int8", "tensor 't0' has shape [2, 4, 4, 8]"),
    ("tflm", _model(ops=[("CUSTOM:MyOp", ["int8"], ["int8"])]), "int8",
     "--target=tflm: op #0 CUSTOM:MyOp (int8 -> int8) is not in TFLite Micro's"),
    ("tflm", _model(io="uint8"), "int8", "input tensor 'in' is uint8; TFLite Micro needs int8"),
])
def test_a_file_that_breaks_a_rule_is_named_in_one_line(target, model, io, message):
  line = targets.problem(targets.get(target), model, WEIGHTS, io)
  assert message in line and "\n" not in line


def test_a_file_that_meets_the_rules_passes():
  model = _model(ops=[("QUANTIZE", ["uint8"], ["int8"]), ("CONV_2D", ["int8"] * 2, ["int8"]),
                      ("MAX_POOL_2D", ["int8"], ["int8"], "NONE")], io="uint8",
                 shapes=[[1, 8, 8, 16]])
  assert targets.problem(targets.get("edgetpu"), model, WEIGHTS, "uint8") is None
  dense = dict(WEIGHTS, weight_dtypes=["float32"])
  line = targets.problem(targets.get("xnnpack_sparse"), _model(io="float32"), dense, "int8")
  assert "stored no weight tensor sparse-encoded" in line


# ----------------------------------------------------------------------------
# Sparse-encoded weights are counted where they are stored.

def test_sparse_encoded_weights_hold_the_zeros_the_dense_file_holds():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(inputs)
  x = keras.layers.Conv2D(32, 1, name="pointwise")(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
  rng = np.random.default_rng(0)
  for name in ("pointwise", "logits"):
    layer = model.get_layer(name)
    w = layer.get_weights()
    w[0] = w[0] * (rng.random(w[0].shape) >= 0.8)
    layer.set_weights(w)
  dense = tflite_tools.inspect_weights(tflite_tools.convert(model, "float"))
  sparse_file = tflite_tools.convert(model, "sparse")
  sparse = tflite_tools.inspect_weights(sparse_file)
  assert sparse["sparse_tensors"] >= 1 and dense["sparse_tensors"] == 0
  for key in ("weights", "weight_zeros", "params", "nonzero_params"):
    assert sparse[key] == dense[key], key
  assert {layer["encoding"] for layer in sparse["layers"]} == {"dense", "sparse"}
  note = targets.xnnpack_sparse_note(tflite_tools.inspect_model(sparse_file), sparse)
  # It starts as XNNPACK's sparse subgraphs must: a 3x3 stride-2 convolution on 3 channels.
  assert note.startswith("XNNPACK's sparse inference may apply") and "1 1x1 CONV_2D" in note
  # The zero-filled twin: the same graph with no zero weight.
  twin = tflite_tools.inspect_weights(tflite_tools.filled_zeros(tflite_tools.convert(model,
                                                                                     "float")))
  assert twin["weight_zeros"] == 0 and twin["weights"] == dense["weights"]


# ----------------------------------------------------------------------------
# Every target on the suite's finished run.

def _copy(finished_run, tmp_path):
  workdir, config, _ = finished_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy, config


def _report(workdir):
  return json.loads((workdir / "export" / "default" / "report.json").read_text())


@pytest.fixture(scope="module")
def targets_run(finished_run, tmp_path_factory):
  """The finished run's QAT student exported for every target, the edgetpu file with uint8
  inputs and outputs."""
  workdir, config = _copy(finished_run, tmp_path_factory.mktemp("targets"))
  export_config = dataclasses.replace(config.export, targets=ALL, int8_io_type="uint8")
  execute.run_stage(export.STAGE, export_config, str(workdir))
  return workdir, config, _report(workdir)


@pytest.mark.slow
def test_every_target_writes_its_checked_file_beside_the_product(targets_run):
  workdir, _, report = targets_run
  folder = workdir / "export" / "default"
  by_name = {m["name"]: m for m in report["models"]}
  assert [t["name"] for t in report["targets"]] == list(ALL)
  for t in report["targets"]:
    assert (folder / (t["model"] + ".tflite")).is_file() and t["passed"]
    assert by_name[t["model"]]["target"] == t["name"]
  assert report["product"] == configs.PRODUCT and configs.PRODUCT in by_name

  edgetpu = (folder / "student_int8_for_edgetpu.tflite").read_bytes()
  info = tflite_tools.inspect_model(edgetpu)
  assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["uint8", "uint8"]
  assert {op["op"] for op in info["ops"]} <= targets.EDGETPU_OPS
  assert tflite_tools.inspect_ops(edgetpu)["float_ops"] == [] and info["dynamic"] == []
  assert all(not (set(op["inputs"] + op["outputs"]) & targets.FLOAT_TYPES) for op in info["ops"])
  assert "edgetpu_compiler" in {t["name"]: t for t in report["targets"]}["edgetpu"][
      "not_checked"]

  tflm_file = by_name["student_int8_for_tflm"]
  figures = tflm_file["tflm"]
  assert figures["examples"] == report["test_examples"]
  assert abs(figures["test_accuracy"] - tflm_file["test_accuracy"]) <= 0.001
  assert figures["flash_bytes"] == tflm_file["tflite_bytes"]
  # Found by running: at least TFLM's own record of a run (which leaves out temporary buffers).
  assert figures["arena_bytes"] >= figures["recorded_arena_bytes"] > 0
  info = tflite_tools.inspect_model((folder / "student_int8_for_tflm.tflite").read_bytes())
  assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["int8", "int8"]

  sparse = by_name["student_float_sparse"]
  assert sparse["sparse_tensors"] >= 1 and sparse["weight_dtypes"] == ["float32"]
  assert sparse["weight_zeros"] == by_name["student_float"]["weight_zeros"]
  assert sparse["zeros_speed"]["compared_with"] == "dense_file"
  text = (folder / "report.md").read_text()
  assert "## Targets" in text and "smallest tensor arena" in text


def test_tflm_runs_the_file_in_its_smallest_arena_and_no_smaller(targets_run):
  workdir, _, report = targets_run
  data = (workdir / "export" / "default" / "student_int8_for_tflm.tflite").read_bytes()
  arena = {m["name"]: m for m in report["models"]}["student_int8_for_tflm"]["tflm"][
      "arena_bytes"]
  x = np.zeros((1,) + tuple(tflite_tools.io_details(data)[0]["shape"][1:]), np.int8)
  assert tflm.run(data, x, arena).shape == (1, 10)
  with pytest.raises(tflm.TflmError):  # refused, or TFLM crashes: either way it does not run
    tflm.run(data, x, arena - tflm.ALIGNMENT)


def test_every_file_gets_its_latency_without_xnnpack_and_a_sentence_on_its_zeros(targets_run):
  report = targets_run[2]
  for m in report["models"]:
    assert m["latency_builtin_ms"] > 0 and m["latency_p10_ms"] <= m["latency_p90_ms"]
    speed = m["zeros_speed"]
    assert speed["sentence"].startswith("`%s`" % m["name"])
    if m["weight_zeros"] and not m["sparse_tensors"]:
      assert set(m["zeros_filled"]) == {"xnnpack", "builtin"}
      assert speed["compared_with"] == "zeros_filled"


def test_predict_on_every_target_file_gives_the_reported_accuracy(targets_run, tmp_path):
  workdir, config, report = targets_run
  _, x, y = _raw_test_split(config.export.data)
  np.savez(tmp_path / "raw.npz", x=x)
  for m in report["models"]:
    out = tmp_path / (m["name"] + ".csv")
    predict.predict(str(workdir / m["file"]), str(tmp_path / "raw.npz"), str(out))
    pred = np.array([int(r["prediction"]) for r in predict.read_predictions(str(out))])
    assert np.mean(pred == y) == m["test_accuracy"], m["name"]  # exactly: the same file


def test_a_target_the_file_breaks_is_refused_before_any_file_is_written(finished_run, tmp_path,
                                                                        monkeypatch):
  workdir, config = _copy(finished_run, tmp_path)
  folder = workdir / "export" / "default"
  before = {p: os.path.getmtime(folder / p) for p in os.listdir(folder)}
  no_fc = dataclasses.replace(targets.get("edgetpu"),
                              ops=targets.EDGETPU_OPS - {"FULLY_CONNECTED"})
  monkeypatch.setitem(targets.BY_NAME, "edgetpu", no_fc)
  export_config = dataclasses.replace(config.export, targets=("litert", "edgetpu"))
  with pytest.raises(ConfigError, match=r"^--target=edgetpu: op #\d+ FULLY_CONNECTED "
                                        r"\(int8, int8, int32 -> int8\) is not in coral.ai"):
    execute.run_stage(export.STAGE, export_config, str(workdir))
  assert {p: os.path.getmtime(folder / p) for p in os.listdir(folder)} == before


def test_a_default_export_reports_every_files_speed_and_no_targets(finished_run):
  report = _report(finished_run[0])
  assert "targets" not in report
  assert all("latency_builtin_ms" in m and m["zeros_speed"]["sentence"] for m in report["models"])
  assert tiny_export_config().targets == ("litert",)

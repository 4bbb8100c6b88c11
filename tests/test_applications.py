"""Keras Applications families (issue 18, part 2): build, QAT, channel analysis, whole runs,
and ``--student_weights``."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from models.compat import keras
from models.errors import ConfigError
from models.registry import ModelSpec, build_model
from pipelines import config as configs
from pipelines.data import bundle as data
from pipelines.stages import export, pipeline, qat, student
from tests.conftest import REPO, tiny_teacher_config

FAMILIES = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
            "resnet50"]


def _spec(family, width=0.35):
  return ModelSpec(family, width=None if family == "resnet50" else width)


def _first_conv(model):
  return next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_builds_logits_from_the_data_and_resizes_small_inputs(family, caplog):
  with caplog.at_level(logging.INFO, logger="kdprune"):
    model = build_model(_spec(family), (8, 8, 1), 7, name="student", flag="--student_model")
  assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 7)
  assert _first_conv(model).kernel.shape[2] == 1  # one channel, from the data
  assert model.layers[-1].name == "logits"
  assert {l.momentum for l in model.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}
  assert model.layers[-1].get_config()["activation"] == "linear"
  assert "%s: inputs 8x8 are smaller than the family's minimum 32; resized up to 32x32" % (
      family) in caplog.text
  assert not [l.name for l in model.layers if isinstance(l, keras.Model)]  # one flat graph
  # kdprune normalizes the data: no preprocessing layer reads the input, no TFOpLambda op
  kinds = {type(l).__name__ for l in model.layers}
  assert "Normalization" not in kinds and "TFOpLambda" not in kinds
  x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
  assert model(x, training=False).shape == (2, 7)  # eager: no predict function to trace


def test_large_enough_inputs_are_not_resized_and_channels_follow_the_data(caplog):
  with caplog.at_level(logging.INFO, logger="kdprune"):
    model = build_model(_spec("mobilenet_v2"), (32, 40, 3), 5, flag="--student_model")
  assert "resized" not in caplog.text
  assert "Resizing" not in {type(l).__name__ for l in model.layers}
  assert _first_conv(model).kernel.shape[2] == 3


@pytest.mark.slow
def test_width_is_the_multiplier():
  narrow = build_model(_spec("mobilenet_v2", 0.35), (32, 32, 1), 10, flag="--student_model")
  wide = build_model(_spec("mobilenet_v2", 0.5), (32, 32, 1), 10, flag="--student_model")
  assert _first_conv(narrow).filters == 16 and _first_conv(wide).filters == 16  # divisible by 8
  assert narrow.count_params() < wide.count_params()
  b0 = build_model(_spec("efficientnet_b0", 0.5), (32, 32, 1), 10, flag="--student_model")
  assert _first_conv(b0).filters == 16  # round_filters(32 * 0.5)


@pytest.mark.parametrize("spec,message", [
    (ModelSpec("resnet50", width=0.5), "--student_width=0.5: resnet50 has no width multiplier"),
    (ModelSpec("mobilenet_v2", width=0), "--student_width=0 must be > 0"),
    (ModelSpec("cnn", width=0.5), "--student_width=0.5 must be a whole number for cnn"),
])
def test_bad_widths_are_refused_in_one_line(spec, message):
  with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
    build_model(spec, (32, 32, 1), 10, flag="--student_model")


def test_width_flags_take_multipliers_and_keep_integers_for_the_other_families():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from pipelines.cli import flags as cli_flags  # pylint: disable=g-import-not-at-top
  cli_flags.define_flags()
  fv = flags.FlagValues()
  for name in ("student_model", "student_width", "student_depth", "student_dropout"):
    fv[name] = flags.FLAGS[name]
  saved = {n: (flags.FLAGS[n].value, flags.FLAGS[n].present) for n in fv}
  try:
    flags.FLAGS(["x", "--student_model=mobilenet_v2"], known_only=True)
    assert cli_flags.model_spec_from_flags("student") == ModelSpec("mobilenet_v2", dropout=None)
    flags.FLAGS(["x", "--student_model=mobilenet_v2", "--student_width=0.35"], known_only=True)
    assert cli_flags.model_spec_from_flags("student").width == 0.35
    flags.FLAGS(["x", "--student_model=cnn", "--student_width=16"], known_only=True)
    width = cli_flags.model_spec_from_flags("student").width
    assert width == 16 and isinstance(width, int)
  finally:
    for n, (value, present) in saved.items():
      flags.FLAGS[n].value, flags.FLAGS[n].present = value, present


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilenet_v2", "efficientnet_b0"])
def test_channel_analysis_keeps_residual_and_depthwise_layers_whole_with_reasons(family):
  from pipelines.prune import channels  # pylint: disable=g-import-not-at-top
  model = build_model(_spec(family), (8, 8, 1), 10, flag="--student_model")
  chains, kept = channels.analyze_model(model)
  reasons = list(kept.values())
  assert chains  # something can lose units
  assert any("DepthwiseConv2D channels follow its input" in r for r in reasons)
  assert any("a residual/merge needs its widths unchanged" in r for r in reasons)
  smaller, removed = channels.step(model, channels.units(model, chains), 0.5, chains)
  assert removed and smaller.count_params() < model.count_params()
  assert smaller(np.zeros((1, 8, 8, 1), "float32"), training=False).shape == (1, 10)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilenet_v3_small"])  # efficientnet_b0: the test below
def test_qat_wraps_squeeze_excite_and_hard_swish_layers(family):
  from pipelines.quantize import qat as qat_lib  # pylint: disable=g-import-not-at-top
  model = build_model(_spec(family), (8, 8, 1), 10, flag="--student_model")
  qmodel = qat_lib.quantize(model, "prune_preserve")
  wrapped = {type(l.layer).__name__ for l in qmodel.layers if hasattr(l, "layer")}
  assert {"Multiply", "Resizing", "Conv2D", "DepthwiseConv2D"} <= wrapped
  x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
  assert qmodel(x).shape == (2, 10)


def _run_config(family, name, weights=None, epochs=2):
  d = data.DataConfig(dataset="digits", train_examples=256)
  fast = dict(batch_size=64, learning_rate=3e-3, patience=0)
  return pipeline.PipelineConfig(
      teacher=tiny_teacher_config(epochs=2),
      student=student.StudentConfig(
          data=d, model=_spec(family), train=configs.TrainConfig(epochs=epochs, **fast),
          pruning=configs.PruningConfig(final_sparsity=0.5, begin="0.0", end="0.5", frequency=1),
          name=name, progress="none", weights=weights),
      qat=qat.QatConfig(data=d, train=configs.TrainConfig(epochs=1, batch_size=64,
                                                           learning_rate=1e-4, patience=0),
                        name=name, progress="none"),
      export=export.ExportConfig(data=d, name=name, latency_runs=2, latency_warmup=1,
                                 representative_examples=8))


@pytest.fixture(scope="module")
def apps_workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("apps")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilenet_v2"])
def test_application_students_go_through_pruning_qat_and_int8_export(family, apps_workdir):
  from pipelines.export import tflite as tflite_tools  # pylint: disable=g-import-not-at-top
  outcomes = pipeline.run(_run_config(family, family), str(apps_workdir), log=lambda *_: None)
  by_stage = {o.name: o.entry for o in outcomes}
  s_metrics = by_stage["student/" + family]["metrics"]
  assert s_metrics["sparsity"] == pytest.approx(0.5, abs=0.02)
  product = os.path.join(str(apps_workdir), "export", family, "student_qat_int8.tflite")
  with open(product, "rb") as f:
    blob = f.read()
  ops = tflite_tools.inspect_ops(blob)
  assert ops["integer_only"], ops["float_ops"]
  weights = tflite_tools.inspect_weights(blob)
  with open(os.path.join(str(apps_workdir), "export", family, "report.json")) as f:
    report = json.load(f)
  assert report, weights
  pruned = s_metrics  # the student's zeros survive QAT and conversion
  q_metrics = by_stage["qat/" + family]["metrics"]
  assert q_metrics["sparsity"] == pytest.approx(pruned["sparsity"], abs=0.01)


@pytest.mark.slow
def test_efficientnet_is_pruned_quantized_and_converted_integer_only_keeping_its_zeros():
  """EfficientNet-B0 (Rescaling/Normalization stem, squeeze-excite, swish) through the library
  calls the stages make: magnitude pruning for two steps (no gradient step), strip, prune-preserving QAT, int8
  conversion. The file is integer-only and holds every pruned layer's zeros. The stages'
  orchestration of an Applications student is pinned by the mobilenet_v2 run above (the full
  EfficientNet run through the stages costs minutes; its MNIST figures are in docs/results.md, "Keras
  Applications students on MNIST")."""
  from pipelines.export import tflite as tflite_tools  # pylint: disable=g-import-not-at-top
  from pipelines.prune import magnitude  # pylint: disable=g-import-not-at-top
  from pipelines.quantize import qat as qat_lib  # pylint: disable=g-import-not-at-top
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  model = build_model(_spec("efficientnet_b0"), (8, 8, 1), 10, flag="--student_model")
  config = configs.PruningConfig(final_sparsity=0.5, begin="0", end="1", frequency=1)
  steps = config.resolve_steps(2, 1)
  pruned, plan = magnitude.apply_pruning(model, config, steps)
  assert sum(v == "prune" for v in plan.values()) >= 10
  x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
  # Two training steps of tfmot's schedule as fit runs them (each training-mode call of a wrapper
  # advances its pruning_step and updates its mask), called eagerly: the gradient step has no
  # part in what is checked, and tracing EfficientNet's train step would cost most of the test.
  update = tfmot.sparsity.keras.UpdatePruningStep()
  update.set_model(pruned)
  update.on_train_begin()
  for i in range(2):
    pruned(x[8 * i:8 * (i + 1)], training=True)
  update.on_epoch_end(0)
  stripped = magnitude.strip(pruned)
  report = magnitude.sparsity_report(stripped, plan)
  assert report["sparsity"] == pytest.approx(0.5, abs=0.02)
  qmodel = qat_lib.quantize(stripped, "prune_preserve")
  wrapped = {type(l.layer).__name__ for l in qmodel.layers if hasattr(l, "layer")}
  assert {"Multiply", "Resizing", "Conv2D", "DepthwiseConv2D"} <= wrapped  # squeeze-excite too
  blob = tflite_tools.convert(qmodel, "qat", representative=lambda: ([x[i:i + 1]] for i in range(4)))
  ops = tflite_tools.inspect_ops(blob)
  assert ops["integer_only"], ops["float_ops"]
  assert not tflite_tools.lost_zeros(tflite_tools.inspect_weights(blob)["layers"],
                                     report["layers"])
  assert qmodel(x[:2]).shape == (2, 10)


@pytest.mark.slow
def test_student_weights_that_do_not_fit_are_refused_with_exit_2(tmp_path):
  other = build_model(_spec("mobilenet_v2", 0.5), (8, 8, 1), 10, flag="--student_model")
  path = str(tmp_path / "wide.keras")
  other.save(path)
  env = dict(os.environ, PYTHONPATH=REPO)
  common = [sys.executable, "-m", "pipelines.cli.student", "--workdir=%s" % (tmp_path / "run"),
            "--dataset=digits", "--student_model=mobilenet_v2", "--student_width=0.35",
            "--nodistill", "--student_epochs=1", "--progress=none"]
  proc = subprocess.run(common + ["--student_weights=%s" % path], capture_output=True,
                        text=True, cwd=REPO, env=env, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if "--student_weights" in l]
  assert lines and "does not fit the student" in lines[-1], proc.stderr[-2000:]
  proc = subprocess.run(common + ["--student_weights=%s" % (tmp_path / "missing.keras")],
                        capture_output=True, text=True, cwd=REPO, env=env, check=False)
  assert proc.returncode == 2 and "no such file or directory" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_student_weights_start_the_student_from_a_saved_one(tmp_path):
  from pipelines.train import distill  # pylint: disable=g-import-not-at-top
  saved = build_model(_spec("mobilenet_v2"), (8, 8, 1), 10, name="student",
                      flag="--student_model")
  path = str(tmp_path / "start.keras")
  saved.save(path)
  config = student.StudentConfig(data=data.DataConfig(dataset="digits"), model=_spec("mobilenet_v2"),
                                 weights=path, progress="none")
  config.validate()
  bundle = data.load(config.data)
  started = distill.build_student(config, bundle)
  for a, b in zip(saved.get_weights(), started.get_weights()):
    np.testing.assert_array_equal(a, b)

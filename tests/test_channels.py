"""Channel pruning: graph analysis, rebuild correctness, the schedule, refusals, the stage."""

import json

import numpy as np
import pytest

from models.compat import keras
from pipelines.stages import student
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.prune import channels
from pipelines.prune import plan as prune_plan
from pipelines.train import distill
from tests.conftest import tiny_student_config


def _conv_bn_conv_dense():
  inputs = keras.Input((6, 6, 2), name="inputs")
  x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(inputs)
  x = keras.layers.BatchNormalization(name="bn_a")(x)
  x = keras.layers.ReLU(name="relu_a")(x)
  x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False, name="conv_b")(x)
  x = keras.layers.BatchNormalization(name="bn_b")(x)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = keras.layers.Dense(7, activation="relu", name="hidden")(x)
  x = keras.layers.Dropout(0.2, name="dropout")(x)
  outputs = keras.layers.Dense(3, name="logits")(x)
  model = keras.Model(inputs, outputs)
  rng = np.random.default_rng(0)
  # Non-trivial BN statistics and scales, so slicing the wrong channel shows.
  model.set_weights([rng.normal(size=w.shape).astype(np.float32) if "variance" not in w.name
                     else rng.uniform(0.5, 2.0, size=w.shape).astype(np.float32)
                     for w in model.weights])
  return model


def test_analysis_finds_owners_consumers_and_keeps_the_output_layer():
  model = _conv_bn_conv_dense()
  chains, kept = channels.analyze_model(model)
  assert set(chains) == {"conv_a", "conv_b", "hidden"}
  assert chains["conv_a"] == {"through": ["bn_a", "relu_a"], "consumer": "conv_b",
                              "flatten": None, "bn": "bn_a"}
  assert chains["conv_b"]["consumer"] == "hidden" and chains["conv_b"]["flatten"] == "flatten"
  assert chains["hidden"]["consumer"] == "logits" and chains["hidden"]["bn"] is None
  assert "model output" in kept["logits"]


def test_shrunk_model_equals_original_with_those_channels_zeroed():
  model = _conv_bn_conv_dense()
  chains, _ = channels.analyze_model(model)
  keep = {"conv_a": np.array([0, 2, 5]), "conv_b": np.array([1, 4]), "hidden": np.array([0, 3, 6])}
  small = channels.shrink(model, keep, chains)
  drop = {n: sorted(set(range(channels.units(model, [n])[n])) - set(k.tolist()))
          for n, k in keep.items()}
  zeroed = channels.zeroed_copy(model, drop, chains)
  x = np.random.default_rng(1).normal(size=(4, 6, 6, 2)).astype(np.float32)
  np.testing.assert_allclose(small(x, training=False).numpy(), zeroed(x, training=False).numpy(),
                             rtol=1e-4, atol=1e-4)
  # ... and the zeroing really matters (the removed channels did contribute).
  assert np.abs(model(x).numpy() - zeroed(x).numpy()).max() > 1e-3
  # Shapes through Conv -> BN -> Conv -> Flatten -> Dense.
  assert small.get_layer("conv_a").kernel.shape == (3, 3, 2, 3)
  assert small.get_layer("bn_a").gamma.shape == (3,)
  assert small.get_layer("conv_b").kernel.shape == (3, 3, 3, 2)
  assert small.get_layer("bn_b").moving_variance.shape == (2,)
  assert small.get_layer("flatten").output_shape == (None, 3 * 3 * 2)
  assert small.get_layer("hidden").kernel.shape == (18, 3)
  assert small.get_layer("logits").kernel.shape == (3, 3)
  assert small.count_params() < model.count_params()


def test_importance_is_bn_scale_else_l2_norm():
  model = _conv_bn_conv_dense()
  chains, _ = channels.analyze_model(model)
  scores = channels.importance(model, chains)
  np.testing.assert_allclose(scores["conv_a"], np.abs(model.get_layer("bn_a").gamma.numpy()))
  kernel, bias = model.get_layer("hidden").get_weights()
  np.testing.assert_allclose(scores["hidden"], np.sqrt((kernel ** 2).sum(0) + bias ** 2),
                             rtol=1e-5)
  assert channels.most_important(np.array([0.1, 3.0, 0.2, 2.0]), 2).tolist() == [1, 3]


def test_schedule_reaches_the_asked_fraction_and_step_removes_the_weakest():
  steps = {"begin_step": 0, "end_step": 30}
  plan = prune_plan.channel_schedule(steps, steps_per_epoch=10, epochs=5, fraction=0.5, exponent=3)
  assert max(plan) == 3 and plan[3] == 0.5
  assert list(plan.values()) == sorted(plan.values())
  model = _conv_bn_conv_dense()
  chains, _ = channels.analyze_model(model)
  original = channels.units(model, chains)
  for epoch in sorted(plan):
    model, _ = channels.step(model, original, plan[epoch], chains)
  assert channels.units(model, chains) == {n: prune_plan.units_to_keep(u, 0.5)
                                           for n, u in original.items()}
  assert channels.units(model, chains) == {"conv_a": 3, "conv_b": 3, "hidden": 3}
  # One step keeps the units with the largest BN scale.
  model = _conv_bn_conv_dense()
  gamma = model.get_layer("bn_a").gamma.numpy()
  small, removed = channels.step(model, original, 0.5, chains)
  assert removed == {"conv_a": 3, "conv_b": 2, "hidden": 4}
  best = np.sort(np.argsort(-np.abs(gamma))[:3])
  np.testing.assert_allclose(small.get_layer("bn_a").gamma.numpy(), gamma[best])
  # Epochs whose fraction removes no further unit are dropped (no rebuild, no optimizer reset).
  assert prune_plan.effective_schedule({1: 0.1, 2: 0.15, 3: 0.5}, {"a": 4}) == {2: 0.15, 3: 0.5}
  with pytest.raises(ConfigError, match="at least one epoch must follow"):
    prune_plan.channel_schedule({"begin_step": 0, "end_step": 50}, 10, 5, 0.5, 3)


def test_layers_that_cannot_be_shrunk_are_kept_with_a_reason():
  inputs = keras.Input((4, 4, 3), name="inputs")
  a = keras.layers.Conv2D(3, 1, name="res_conv")(inputs)
  x = keras.layers.Add(name="add")([inputs, a])
  x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
  x = keras.layers.Conv2D(4, 1, name="to_lambda")(x)
  x = keras.layers.Lambda(lambda t: t * 2, name="lam")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  outputs = keras.layers.Dense(2, name="logits")(x)
  model = keras.Model(inputs, outputs)
  chains, kept = channels.analyze_model(model)
  assert chains == {}
  assert "residual" in kept["res_conv"] and "add" in kept["res_conv"]
  assert "DepthwiseConv2D" in kept["dw"]
  assert "Lambda lam" in kept["to_lambda"]
  assert "model output" in kept["logits"]
  with pytest.raises(ConfigError, match="res_conv"):
    channels.shrink(model, {"res_conv": np.array([0])})
  seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  with pytest.raises(ConfigError, match="Functional"):
    channels.analyze_model(seq)


def test_config_refusals_before_any_work():
  with pytest.raises(ConfigError, match="--channel_fraction"):
    configs.PruningConfig(structure="channels", channel_fraction=1.0).validate()
  with pytest.raises(ConfigError, match="--initial_sparsity=0.3 is above"):
    configs.PruningConfig(structure="channels", initial_sparsity=0.3).validate()
  assert configs.PruningConfig(structure="channels").target == 0.0
  assert configs.PruningConfig(structure="channels", final_sparsity=0.5).target == 0.5
  with pytest.raises(ConfigError, match="at least one epoch"):  # the stage's check (it reads the data)
    student.validate(tiny_student_config(epochs=2, final_sparsity=None, structure="channels",
                                         end="1.0", frequency=0))
  # A default-valued new field leaves old fingerprints alone, and so does --channel_fraction
  # when the student is not channel-pruned.
  assert "channel_fraction" not in configs.resolved(configs.PruningConfig())
  assert tiny_student_config(channel_fraction=0.7).resolved() == tiny_student_config().resolved()
  assert tiny_student_config(structure="channels", final_sparsity=None, channel_fraction=0.7
                            ).resolved()["pruning"]["channel_fraction"] == 0.7


@pytest.mark.slow
def test_channels_student_through_qat_and_export(tmp_path, capsys):
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_export_config, tiny_qat_config, tiny_teacher_config
  ch = tiny_student_config(epochs=4, final_sparsity=None, structure="channels", frequency=0,
                           channel_fraction=0.5, name="channels")
  config = pipeline.PipelineConfig(teacher=tiny_teacher_config(), student=ch,
                                   qat=tiny_qat_config(name="channels"),
                                   export=tiny_export_config(name="channels"))
  pipeline.run(config, str(tmp_path), log=lambda *_: None)
  printed = capsys.readouterr().out
  assert "[student/channels] logits: kept whole: it is a model output" in printed
  assert "removed dense_1" in printed
  d = tmp_path / "student" / "channels"
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["channels"]["layers"] == {"dense_1": {"units_before": 64, "units_after": 32,
                                                       "removed_fraction": 0.5}}
  assert "model output" in metrics["channels"]["kept_whole"]["logits"]
  assert metrics["params"] < metrics["params_before_channels"]
  assert metrics["best_epoch"] > max(int(e) for e in metrics["channels"]["schedule"])
  model = distill.load_keras_model(str(d / "model.keras"))
  assert model.get_layer("dense_1").units == 32
  report = json.loads((tmp_path / "export" / "channels" / "report.json").read_text())
  product = {m["name"]: m for m in report["models"]}[report["product"]]
  # The unstructured student of the same architecture keeps all 64 * 64 + 64 + 64 * 10 + 10 weights
  # (zeros included); the int8 file of the channels student holds about half.
  assert product["params"] <= 64 * 32 + 32 + 32 * 10 + 10 + 64
  assert product["latency_ms"] > 0
  assert product["test_accuracy"] > 0.6


def test_resnet_shrinks_inside_blocks_and_keeps_residual_widths():
  from models.registry import build_model  # pylint: disable=g-import-not-at-top
  from models.spec import ModelSpec  # pylint: disable=g-import-not-at-top
  model = build_model(ModelSpec("resnet", width=4, depth=1), (8, 8, 1), 3, name="s", flag="x")
  chains, kept = channels.analyze_model(model)
  assert sorted(chains) == ["stage%d_block1_a_conv" % s for s in (1, 2, 3)]
  assert "feeds 2 layers" in kept["stem_conv"]
  assert "residual" in kept["stage2_block1_b_conv"] and "residual" in kept["stage2_block1_proj"]
  small, removed = channels.step(model, channels.units(model, chains), 0.5, chains)
  assert removed == {"stage1_block1_a_conv": 2, "stage2_block1_a_conv": 4,
                     "stage3_block1_a_conv": 8}
  assert small.get_layer("stage2_block1_b_conv").kernel.shape == (3, 3, 4, 8)
  x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
  assert small(x).shape == (2, 3) and small.count_params() < model.count_params()


@pytest.mark.slow
def test_shrink_then_sparsify(tmp_path):
  from pipelines.stages import pipeline  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_export_config, tiny_qat_config, tiny_teacher_config
  both = tiny_student_config(epochs=4, final_sparsity=0.7, structure="channels", frequency=5,
                             channel_fraction=0.5, name="both")
  config = pipeline.PipelineConfig(teacher=tiny_teacher_config(), student=both,
                                   qat=tiny_qat_config(name="both"),
                                   export=tiny_export_config(name="both"))
  pipeline.run(config, str(tmp_path), log=lambda *_: None)
  d = tmp_path / "student" / "both"
  metrics = json.loads((d / "metrics.json").read_text())
  assert metrics["channels"]["layers"]["dense_1"]["units_after"] == 32
  assert metrics["pruning"]["plan"]["dense_1"] == "prune"
  assert metrics["sparsity"] == pytest.approx(0.7, abs=0.005)
  kernel = distill.load_keras_model(str(d / "model.keras")).get_layer("dense_1").kernel.numpy()
  assert kernel.shape == (64, 32) and np.mean(kernel == 0) == pytest.approx(0.7, abs=0.005)
  # Both phases logged; the export kept the zeros (it fails otherwise) in the smaller file.
  assert (d / "shrink" / "metrics.jsonl").is_file() and (d / "metrics.jsonl").is_file()
  report = json.loads((tmp_path / "export" / "both" / "report.json").read_text())
  product = {m["name"]: m for m in report["models"]}[report["product"]]
  assert product["params"] <= 64 * 32 + 32 + 32 * 10 + 10 + 64
  assert product["weight_zeros"] >= 0.69 * 64 * 32


def test_lenet_loses_units_in_every_conv_and_its_hidden_dense():
  from models import ModelSpec, build_model  # pylint: disable=g-import-not-at-top
  model = build_model(ModelSpec("lenet", width=8, depth=2), (8, 8, 1), 10)
  chains, kept = channels.analyze_model(model)
  assert kept == {"logits": "kept whole: it is a model output"}
  smaller, removed = channels.step(model, channels.units(model, chains), 0.5, chains)
  assert removed == {"conv_1": 4, "conv_2": 8, "dense": 32}
  x = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
  assert smaller.predict(x, verbose=0).shape == (3, 10)


def test_a_plan_that_removes_no_unit_is_refused_before_the_teacher_outputs(tmp_path, monkeypatch):
  """A two-unit hidden layer at --channel_fraction=0.1 keeps both units at every rebuild: the plan
  removes nothing (this ended in a traceback after the teacher's outputs were computed)."""
  from models.registry import ModelSpec
  from pipelines.runtime import execute
  from pipelines.stages import teacher as teacher_stage
  from tests.conftest import tiny_teacher_config
  t = tiny_teacher_config(epochs=1)
  execute.execute("teacher", teacher_stage.run, t, str(tmp_path), {"t": 1}, log=lambda *_: None)
  ch = tiny_student_config(epochs=4, final_sparsity=None, structure="channels", frequency=0,
                           channel_fraction=0.1, name="tiny")
  import dataclasses
  ch = dataclasses.replace(ch, model=ModelSpec("mlp", width=2, depth=1))
  computed = []
  monkeypatch.setattr(distill, "training_batches", lambda *a, **k: computed.append(1))
  with pytest.raises(ConfigError, match="--channel_fraction=0.1 removes no unit of the student's "
                                        "shrinkable layers \\(dense_1 2\\)"):
    student.run(ch, str(tmp_path))
  assert not computed  # refused before the teacher's outputs

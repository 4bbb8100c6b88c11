"""Model registry: families, knobs, user builders, and refusals tfmot needs."""

import pytest

from models import ModelSpec, available, build_model
from models.compat import keras
from models.registry import register, validate_spec
from pipelines.config.errors import ConfigError


@pytest.mark.parametrize("family", ["mlp", "cnn", "lenet", "tinycnn", "resnet"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_families_build_functional_logit_models(family, shape):
  model = build_model(ModelSpec(family, width=8, depth=1), shape, 7)
  assert model._is_graph_network  # Functional: tfmot can prune/quantize it
  assert model.input_shape == (None,) + shape
  assert model.output_shape == (None, 7)
  assert model.layers[-1].get_config().get("activation") == "linear"  # logits


def test_mlp_takes_flat_inputs_and_cnns_refuse_them():
  assert build_model(ModelSpec("mlp"), (20,), 3).output_shape == (None, 3)
  with pytest.raises(ConfigError, match="cnn needs image inputs"):
    build_model(ModelSpec("cnn"), (20,), 3, flag="--teacher_model")


def test_width_and_depth_knobs_change_the_model():
  base = build_model(ModelSpec("cnn", width=8, depth=1), (28, 28, 1), 10)
  wider = build_model(ModelSpec("cnn", width=16, depth=1), (28, 28, 1), 10)
  deeper = build_model(ModelSpec("cnn", width=8, depth=2), (28, 28, 1), 10)
  assert wider.count_params() > base.count_params()
  assert len(deeper.layers) > len(base.layers)
  r1 = build_model(ModelSpec("resnet", width=8, depth=1), (28, 28, 1), 10)
  r3 = build_model(ModelSpec("resnet", width=8, depth=3), (28, 28, 1), 10)
  assert sum("_add" in l.name for l in r1.layers) == 3
  assert sum("_add" in l.name for l in r3.layers) == 9  # ResNet-20 shape


def test_defaults_come_from_the_family():
  m = build_model(ModelSpec("mlp"), (8, 8, 1), 10)
  assert [l.units for l in m.layers if isinstance(l, keras.layers.Dense)] == [256, 256, 10]


def test_registry_lists_families_and_refuses_duplicates():
  names = available()
  assert {"mlp", "cnn", "resnet"} <= set(names)
  with pytest.raises(ValueError, match="already registered"):
    register("mlp", "again", width=1, depth=1)(lambda *a, **k: None)


def test_user_builder_by_module_path():
  model = build_model(ModelSpec("tests.builders:tiny"), (8, 8, 1), 10)
  assert model.output_shape == (None, 10)


@pytest.mark.parametrize("name,message", [
    ("nosuchfamily", "unknown model; choose one of cnn, efficientnet_b0, lenet, mlp, mobilenet_v2, "
                     "mobilenet_v3_large, mobilenet_v3_small, resnet, resnet50, tinycnn"),
    ("tests.nosuchmodule:fn", "cannot import tests.nosuchmodule"),
    ("tests.builders:nope", "tests.builders has no function nope"),
    ("tests.builders:no_args", "must accept (input_shape, num_classes)"),
    (":fn", "expected package.module:function"),
])
def test_bad_model_names(name, message):
  with pytest.raises(ConfigError) as err:
    validate_spec(ModelSpec(name), "--teacher_model")
  assert message in str(err.value)
  assert str(err.value).startswith("--teacher_model=" + name)


@pytest.mark.parametrize("builder,message", [
    ("keras3", "Keras 3 object"),
    ("subclassed", "subclassed model"),
    ("wrong_classes", "does not match the data's 10 classes"),
    ("raises", "the builder raised RuntimeError: builder exploded"),
])
def test_models_tfmot_cannot_handle_are_refused(builder, message):
  with pytest.raises(ConfigError) as err:
    build_model(ModelSpec("tests.builders:" + builder), (8, 8, 1), 10, flag="--teacher_model")
  assert message in str(err.value)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec,flag", [
    (ModelSpec("cnn", width=0), "--teacher_width"),
    (ModelSpec("cnn", depth=0), "--teacher_depth"),
    (ModelSpec("cnn", dropout=1.0), "--teacher_dropout"),
])
def test_knob_ranges(spec, flag):
  with pytest.raises(ConfigError, match="^" + flag):
    validate_spec(spec, "--teacher_model")


@pytest.mark.parametrize("builder", ["softmax_dense", "softmax_layer"])
def test_softmax_heads_of_user_builders_become_logits_with_a_line(builder, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tests import builders  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  original = getattr(builders, builder)((8, 8, 1), 10)
  keras.utils.set_random_seed(0)
  with caplog.at_level(logging.INFO, logger="kdprune"):
    model = build_model(ModelSpec("tests.builders:" + builder), (8, 8, 1), 10,
                        flag="--student_model")
  assert "--student_model=tests.builders:%s ends in a softmax" % builder in caplog.text
  x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
  logits = model.predict(x, verbose=0)
  assert not np.allclose(logits.sum(-1), 1.0)  # logits, not probabilities
  np.testing.assert_allclose(keras.activations.softmax(keras.backend.constant(logits)).numpy(),
                             original.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_softmax_inside_a_nested_model_is_flattened_then_removed(caplog):
  import logging  # pylint: disable=g-import-not-at-top
  with caplog.at_level(logging.INFO, logger="kdprune"):
    model = build_model(ModelSpec("tests.builders:softmax_nested"), (8, 8, 1), 10,
                        flag="--student_model")
  assert "nests head" in caplog.text and "ends in a softmax" in caplog.text
  assert model.layers[-1].get_config()["activation"] == "linear"


def test_a_softmax_inside_a_nested_model_is_refused_when_not_flattened():
  from models import heads  # pylint: disable=g-import-not-at-top
  from tests import builders  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="ends in a softmax inside the nested model head"):
    heads.to_logits(builders.softmax_nested((8, 8, 1), 10), "--student_model=x")


@pytest.mark.parametrize("builder", ["nested_sequential", "nested_functional"])
def test_nested_models_are_flattened_with_the_same_weights(builder, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tests import builders  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  original = getattr(builders, builder)((8, 8, 1), 10)
  keras.utils.set_random_seed(0)
  with caplog.at_level(logging.INFO, logger="kdprune"):
    flat = build_model(ModelSpec("tests.builders:" + builder), (8, 8, 1), 10, flag="--student_model")
  assert "nests backbone" in caplog.text and "flattened into one Functional graph" in caplog.text
  assert not any(isinstance(l, keras.Model) for l in flat.layers)
  assert flat.count_params() == original.count_params()
  x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
  keras.utils.set_random_seed(0)
  same = getattr(builders, builder)((8, 8, 1), 10)
  same.set_weights(flat.get_weights())  # one-to-one weights, in the same order
  np.testing.assert_allclose(flat.predict(x, verbose=0), same.predict(x, verbose=0), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.slow
def test_a_nested_student_is_pruned_and_quantized_layer_by_layer(tmp_path):
  """Every prunable layer of the inner models ends at its target and int8 in the .tflite."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from pipelines.runtime import execute  # pylint: disable=g-import-not-at-top
  from pipelines.stages import export, qat, student, teacher  # pylint: disable=g-import-not-at-top
  from tests.conftest import (tiny_export_config, tiny_qat_config,  # pylint: disable=g-import-not-at-top
                              tiny_student_config, tiny_teacher_config)
  workdir = str(tmp_path)
  pupil = tiny_student_config(epochs=3, final_sparsity=0.5, keep_dense=())
  pupil = dataclasses.replace(pupil, model=ModelSpec("tests.builders:nested_sequential"))
  for cfg, mod in ((tiny_teacher_config(), teacher), (pupil, student), (tiny_qat_config(), qat),
                   (tiny_export_config(), export)):
    execute.execute(cfg.stage, mod.run, cfg, workdir, mod.fingerprint_inputs(cfg, workdir),
                    log=lambda *_: None)
  with open(tmp_path / "student" / "default" / "metrics.json") as f:
    layers = json.load(f)["pruning"]["layers"]
  assert len(layers) == 3  # the backbone's conv, the head's two Dense layers
  for name, layer in layers.items():
    assert layer["sparsity"] == pytest.approx(0.5, abs=0.01), name
  with open(tmp_path / "export" / "default" / "report.json") as f:
    product = [m for m in json.load(f)["models"] if m["name"] == "student_qat_int8"][0]
  assert product["weight_dtypes"] == ["int8"]
  assert len(product["layers"]) == 3 and all(l["dtype"] == "int8" for l in product["layers"])
  assert product["sparsity"] >= 0.49


@pytest.mark.parametrize("family", ["mlp", "cnn", "lenet", "resnet"])
def test_mixed_precision_keeps_the_logits_layer_in_float32(family):
  """Keras' mixed-precision guide: the model's output layer computes in float32 (issue 17, 9)."""
  from pipelines.train import precision  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = ModelSpec(family, width=8, depth=1)
  with precision.precision(True):
    model = build_model(spec, (8, 8, 1), 5)
  assert model.get_layer("logits").compute_dtype == "float32"
  assert model.output.dtype == tf.float32
  assert model(tf.zeros((2, 8, 8, 1))).dtype == tf.float32
  assert any(l.compute_dtype == "float16" for l in model.layers)  # the rest is mixed
  # A float32 model is built as before: same config, so same fingerprints and saved models.
  plain = build_model(spec, (8, 8, 1), 5)
  assert plain.get_layer("logits").get_config()["dtype"] == "float32"
  assert plain.output.dtype == tf.float32
  assert precision.to_float32(model).get_config() == plain.get_config()


def test_tinycnn_is_lenet_without_its_hidden_dense():
  """The 5 KB MNIST preset's student: conv blocks, Flatten, the classifier and nothing between."""
  tiny = build_model(ModelSpec("tinycnn"), (28, 28, 1), 10)  # defaults: width 8, depth 3
  kernels = [(l.name, int(l.kernel.shape.num_elements())) for l in tiny.layers
             if hasattr(l, "kernel")]
  assert kernels == [("conv_1", 72), ("conv_2", 1152), ("conv_3", 4608), ("logits", 2880)]
  lenet = build_model(ModelSpec("lenet", width=8, depth=3, dropout=0), (28, 28, 1), 10)
  assert [l.name for l in lenet.layers if l.name not in ("dense", "relu_dense")] == [
      l.name for l in tiny.layers]
  with pytest.raises(ConfigError, match="tinycnn needs image inputs"):
    build_model(ModelSpec("tinycnn"), (20,), 3, flag="--student_model")

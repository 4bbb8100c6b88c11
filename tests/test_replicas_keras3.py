"""Replicas must not change a Keras 3 student's update either: one step and one short epoch of
the Keras 3 distillation trainer (pipelines/train/distill_keras3.py), with the masks of
pipelines/prune/keras3.py updated on tfmot's schedule during the steps, end with the same
weights, masks and logged losses with one replica, two mirrored CPU replicas and two workers on
localhost. The child processes and the comparison are tests/test_replicas.py's.

49 examples in batches of 16: the last batch holds one, so one of two replicas gets none. Keras
3's own trainer weighs each replica's mean alike and logs the average of the replicas' own means
for validation; and on oneDNN a convolution's gradient on an empty batch aborts the process.
"""

import textwrap

import numpy as np
import pytest

from tests.test_replicas import FINISH, STRATEGY, _child, _compare, _load, _wait, two_workers

# (name, optimizer, epochs (0: the first batch only), examples, kind)
CASES = [
    ("k3_sgd_step", "sgd", 0, 64, "mlp"), ("k3_sgd_epoch", "sgd", 1, 64, "mlp"),
    ("k3_momentum_epoch", "momentum", 1, 64, "mlp"), ("k3_adam_epoch", "adam", 2, 64, "mlp"),
    ("k3_sgd_uneven", "sgd", 1, 49, "mlp"), ("k3_adam_uneven", "adam", 2, 49, "mlp"),
    # tfmot's schedule to step 4, then dynamic pruning's mask revisions at steps 6, 8, 10, from
    # the gradients summed over replicas (one replica's alone would pick other weights).
    ("k3_dynamic_sgd", "sgd", 3, 64, "dynamic"),
    # Batch norm: each replica normalises by its own slice, so the weights are not compared.
    ("k3_bn_uneven", "sgd", 2, 49, "bn"),
]
COMPARED = [c for c in CASES if c[4] != "bn"]

_KERAS3_CHILD = STRATEGY + textwrap.dedent("""
    import numpy as np
    from models import keras3 as keras3_models
    from models.spec import ModelSpec
    from pipelines.config import PruningConfig
    from pipelines.prune import keras3 as prune_keras3
    from pipelines.train import distill_keras3, losses

    K = keras3_models.keras3()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    logits = (2 * rng.normal(size=(64, 10))).astype(np.float32)
    results = {}
    for name, opt, epochs, examples, kind in args["cases"]:
      with strategy.scope():
        K.utils.set_random_seed(0)
        dense = kind != "bn"
        spec = ModelSpec("mlp" if dense else "cnn", width=8 if dense else 4, depth=1,
                         dropout=0.0)
        student = keras3_models.build_family(spec, (8, 8, 1), 10)
        if dense:
          init = np.random.default_rng(1)
          student.set_weights([init.normal(scale=0.3, size=w.shape).astype(np.float32)
                               for w in student.get_weights()])
        # Masks updated at every step from the first to the fourth (sparsity 0.5 at step 4).
        config = PruningConfig(final_sparsity=0.5, begin="0", end="4", frequency=1,
                               keep_dense=())
        if kind == "dynamic":
          config = PruningConfig(final_sparsity=0.5, begin="0", end="4", frequency=2,
                                 keep_dense=(), method="dynamic", mask_update_every=2,
                                 mask_update_end="11", drop_fraction=0.3)
        steps = config.resolve_steps(4, max(1, epochs))
        student, _ = prune_keras3.wrap(student, config, steps)
        state = prune_keras3.state_of(student)
        revision = prune_keras3.revision(student, config, steps) if kind == "dynamic" else None
        optimizer = {"sgd": lambda: K.optimizers.SGD(0.5),
                     "momentum": lambda: K.optimizers.SGD(0.2, momentum=0.9),
                     "adam": lambda: K.optimizers.Adam(0.01)}[opt]()
        trainer = distill_keras3.DistillationTrainer(student, temperature=2.0, alpha=0.3,
                                                     mask_revision=revision)
        trainer.compile(optimizer=optimizer, steps_per_execution=1, jit_compile=False)
        trainer.optimizer.build(student.trainable_variables)
      ds = tf.data.Dataset.from_tensor_slices(
          (x[:examples], (y[:examples], logits[:examples]))).batch(16)
      validation = tf.data.Dataset.from_tensor_slices((x[:examples], y[:examples])).batch(16)
      history = trainer.fit(ds.take(1) if epochs == 0 else ds, epochs=max(1, epochs), verbose=0,
                            shuffle=False, validation_data=validation)
      for w in student.weights:
        results["%s/%s" % (name, w.path)] = np.asarray(w.numpy())
      for layer, mask in zip(state.layer_names, state.masks):
        results["%s/%s/mask" % (name, layer)] = mask.numpy()
      results["%s/pruning_step" % name] = np.array(state.step())
      if revision is not None:
        results["%s/revisions" % name] = np.array(revision.report()["mask_revisions"])
      for key, values in history.history.items():
        results["%s/log/%s" % (name, key)] = np.array(values[-1])
      out = student(x[:examples], training=False)  # what is saved (the replicas' mean statistics)
      results["%s/log/numpy_val_loss" % name] = np.mean(
          losses.hard_cross_entropy_per_example(y[:examples], out).numpy())
      results["%s/log/numpy_val_accuracy" % name] = np.mean(
          np.argmax(np.asarray(out), axis=-1) == y[:examples])
""") + FINISH


@pytest.fixture(scope="module")
def one_and_two_replicas(tmp_path_factory):
  d = tmp_path_factory.mktemp("keras3_replicas")
  one = _child("one", d / "one.npz", CASES, script=_KERAS3_CHILD)
  two = _child("mirrored", d / "two.npz", CASES, script=_KERAS3_CHILD)
  _wait(one, two)
  return _load(d / "one.npz"), _load(d / "two.npz")


def _check_pruned_and_logged(case, results):
  """The masks reached the schedule's 0.5 at step 4; the logged validation figures are what the
  model gives on every example once."""
  masks = [v for k, v in results.items() if k.startswith(case + "/") and k.endswith("/mask")]
  epochs = next(c[2] for c in CASES if c[0] == case)
  steps = 4 * epochs if epochs else 1  # 4 batches an epoch (64 or 49 examples in batches of 16)
  assert masks and int(results[case + "/pruning_step"]) == steps
  if steps >= 4:
    assert all(abs(1 - m.mean() - 0.5) < 0.02 for m in masks), [1 - m.mean() for m in masks]
  else:
    assert all(0 < 1 - m.mean() < 0.5 for m in masks), [1 - m.mean() for m in masks]
  log = {k.split("/log/")[1]: float(v) for k, v in results.items()
         if k.startswith(case + "/log/")}
  assert all(np.isfinite(v) for v in log.values()), log
  assert log["val_loss"] == pytest.approx(log["numpy_val_loss"], rel=1e-5), log
  assert log["val_accuracy"] == pytest.approx(log["numpy_val_accuracy"], abs=1e-6), log


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in COMPARED])
def test_two_mirrored_replicas_train_a_keras3_student_like_one(case, one_and_two_replicas):
  one, two = one_and_two_replicas
  _compare(case, one, two)  # weights, masks and pruning step; logged losses
  for results in (one, two):
    _check_pruned_and_logged(case, results)
    if case == "k3_dynamic_sgd":
      assert int(results[case + "/revisions"]) == 3  # at steps 6, 8 and 10


@pytest.mark.slow
def test_a_keras3_batch_norm_student_with_an_empty_replica_trains_and_logs_the_saved_models(
    one_and_two_replicas):
  """The CNN's convolution gradient on an empty replica's batch aborted the process (oneDNN);
  now it trains with finite weights, every example counted once in the logged accuracies, and
  the logged validation figures are the saved model's (the replicas' mean statistics)."""
  for results in one_and_two_replicas:
    weights = [v for k, v in results.items() if k.startswith("k3_bn_uneven/")
               and "/log/" not in k]
    assert weights and all(np.all(np.isfinite(w)) for w in weights)
    _check_pruned_and_logged("k3_bn_uneven", results)
    for key in ("accuracy", "val_accuracy"):  # a count of examples over 49
      value = float(results["k3_bn_uneven/log/" + key]) * 49
      assert value == pytest.approx(round(value), abs=1e-3), (key, value)


@pytest.mark.slow
def test_two_workers_on_localhost_train_a_keras3_student_like_one_replica(
    tmp_path, one_and_two_replicas):
  one, _ = one_and_two_replicas
  cases = [c for c in CASES if c[0] in ("k3_sgd_step", "k3_sgd_uneven")]
  for workers in two_workers(tmp_path, cases, script=_KERAS3_CHILD):
    for case, *_ in cases:
      _compare(case, one, workers)
      _check_pruned_and_logged(case, workers)

"""Replicas must not change the update: one step and one short epoch of the same student with one
replica, two mirrored CPU replicas and two workers on localhost end with the same weights.

Each case runs in a child process (logical CPU devices and multi-worker strategies must be set up
before TensorFlow initialises its devices); the children write the weights to .npz files.

Batch-normalized models normalise each replica's slice by its own statistics, so their weights
differ from one replica's; their cases check instead that a replica without examples trains and
validates, and that the logged validation loss and accuracy are the saved model's over every
example once.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_distribute import _free_port_block

# Every case: (name, optimizer, epochs, dynamic pruning, examples). 64 examples in batches
# of 16: an epoch is 4 steps; "step" cases train on the first batch only.
CASES = [
    ("sgd_step", "sgd", 0, False, 64), ("sgd_epoch", "sgd", 1, False, 64),
    ("momentum_step", "momentum", 0, False, 64),
    ("momentum_epoch", "momentum", 1, False, 64),
    ("adam_step", "adam", 0, False, 64), ("adam_epoch", "adam", 1, False, 64),
    # tfmot's schedule to step 4, then mask revisions at steps 6, 8, 10 (summed gradients).
    ("dynamic_sgd", "sgd", 3, True, 64),
    # 49 examples: the last batch holds one, so one of two replicas gets none (its mean loss was
    # NaN, and a short last batch weighed as a full one).
    ("sgd_uneven", "sgd", 1, False, 49), ("adam_uneven", "adam", 2, False, 49),
    # The teacher's trainer (labels only): one per-example mean over the global batch, as the
    # student's (Keras' compiled loss was a mean per replica, over the replica count).
    ("labels_uneven", "sgd", 1, False, 49, "labels"),
    # A batch-normalized CNN (student, then the teacher's trainer), validated on the same 49
    # examples: an empty replica made its convolution return the wrong shape and its first batch
    # norm fail ("scale must have the same number of elements as the channels of x").
    ("bn_uneven", "sgd", 2, False, 49, "bn"), ("bn_labels_uneven", "adam", 2, False, 49,
                                               "bn_labels"),
]
# Cases whose weights are compared with one replica's (not batch-normalized ones).
COMPARED = [c for c in CASES if not c[5:] or not c[5].startswith("bn")]

# A child's first lines: the strategy its argument names (one replica, two mirrored CPU devices,
# or a worker of TF_CONFIG's cluster), made before TensorFlow initialises its devices.
STRATEGY = textwrap.dedent("""
    import json, os, sys
    args = json.loads(sys.argv[1])
    from models.compat import keras, tf
    if args["strategy"] == "mirrored":
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif args["strategy"] == "workers":
      from pipelines.runtime import distribute
      strategy = distribute.init("multi_worker")  # MultiWorkerMirroredStrategy from TF_CONFIG
    else:
      strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
""")
# A child's last lines: its results to the .npz file, then the exit handshake of a worker.
FINISH = textwrap.dedent("""
    np.savez(args["out"], **results)
    if args["strategy"] == "workers":
      distribute.finish()  # the exit handshake the entry points make
    print("OK")
""")

_CHILD = STRATEGY + textwrap.dedent("""
    import numpy as np
    import tensorflow_model_optimization as tfmot
    from models.registry import ModelSpec, build_model
    from pipelines import config as configs
    from pipelines.train import distill, losses
    from pipelines.prune import dynamic
    from pipelines.prune import magnitude as pruning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    logits = (2 * rng.normal(size=(64, 10))).astype(np.float32)
    results = {}
    for name, opt, epochs, dyn, examples, *kind in args["cases"]:
      kind = kind[0] if kind else "distill"
      with strategy.scope():
        keras.utils.set_random_seed(0)
        if kind.startswith("bn"):
          student = build_model(ModelSpec("cnn", width=4, depth=1, dropout=0.0), (8, 8, 1), 10)
        else:
          student = build_model(ModelSpec("mlp", width=8, depth=1, dropout=0.0), (8, 8, 1), 10)
          init = np.random.default_rng(1)
          student.set_weights([init.normal(scale=0.3, size=w.shape).astype(np.float32)
                               for w in student.get_weights()])
        revision, callbacks = None, []
        if dyn:
          config = configs.PruningConfig(final_sparsity=0.5, begin="0", end="4", frequency=2,
                                         keep_dense=(), method="dynamic", mask_update_every=2,
                                         mask_update_end="11", drop_fraction=0.3)
          steps = config.resolve_steps(4, epochs)
          student, _ = pruning.apply_pruning(student, config, steps)
          revision = dynamic.MaskRevision(student, steps["mask_update_begin"],
                                          steps["mask_update_end"], steps["mask_update_every"],
                                          config.drop_fraction)
          callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
        optimizer = {"sgd": lambda: keras.optimizers.SGD(0.5),
                     "momentum": lambda: keras.optimizers.SGD(0.2, momentum=0.9),
                     "adam": lambda: keras.optimizers.Adam(0.01)}[opt]()
        if kind.endswith("labels"):
          trainer = distill.LabelTrainer(student, configs.DataConfig())
        else:
          trainer = distill.DistillationTrainer(student, temperature=2.0, alpha=0.3,
                                                mask_revision=revision)
        trainer.compile(optimizer=optimizer, steps_per_execution=1)
      targets = y[:examples] if kind.endswith("labels") else (y[:examples], logits[:examples])
      ds = tf.data.Dataset.from_tensor_slices((x[:examples], targets)).batch(16)
      validation = None
      if kind.startswith("bn"):  # the last batch of 16 holds one example: a replica gets none
        validation = tf.data.Dataset.from_tensor_slices((x[:examples], y[:examples])).batch(16)
      history = trainer.fit(ds.take(1) if epochs == 0 else ds, epochs=max(1, epochs), verbose=0,
                            shuffle=False, callbacks=callbacks, validation_data=validation)
      for w, value in zip(student.weights, student.get_weights()):
        results["%s/%s" % (name, w.name)] = value
      for key, values in history.history.items():
        results["%s/log/%s" % (name, key)] = np.array(values[-1])
      if validation is not None:  # what the saved model gives (the replicas' mean statistics)
        out = student(x[:examples], training=False)
        results["%s/log/numpy_val_loss" % name] = np.mean(
            losses.hard_cross_entropy_per_example(y[:examples], out).numpy())
        results["%s/log/numpy_val_accuracy" % name] = np.mean(
            np.argmax(out.numpy(), axis=-1) == y[:examples])
      if dyn:
        results["%s/log/revisions" % name] = np.array(revision.report()["mask_revisions"])
""") + FINISH


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
              PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _child(strategy, out, cases=CASES, environ=None, script=_CHILD):
  """``script`` (default: the tf_keras cases above) in a child process with ``strategy``."""
  args = json.dumps({"strategy": strategy, "out": str(out), "cases": cases})
  return subprocess.Popen([sys.executable, "-c", script, args], cwd=REPO, env=environ or _env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(*procs):
  for p in procs:
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0 and "OK" in stdout, stderr[-3000:]


def _load(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def one_and_two_replicas(tmp_path_factory):
  d = tmp_path_factory.mktemp("replicas")
  one = _child("one", d / "one.npz")
  two = _child("mirrored", d / "two.npz")
  _wait(one, two)
  return _load(d / "one.npz"), _load(d / "two.npz")


def _compare(case, one, two):
  keys = sorted(k for k in one if k.startswith(case + "/") and "/log/" not in k)
  assert keys and sorted(k for k in two if k.startswith(case + "/") and "/log/" not in k) == keys
  assert all(np.all(np.isfinite(two[k])) for k in keys), case
  worst = max(float(np.max(np.abs(one[k] - two[k]), initial=0.0)) for k in keys)
  assert worst <= 1e-5, "%s: weights differ by up to %g" % (case, worst)
  # The logged losses are the per-example means of the global batch, whatever the replicas.
  logged = [k for k in one if k.startswith(case + "/log/") and k.endswith("loss")]
  assert logged and sorted(logged) == sorted(
      k for k in two if k.startswith(case + "/log/") and k.endswith("loss"))
  for k in logged:
    assert float(two[k]) == pytest.approx(float(one[k]), rel=1e-5, abs=1e-6), k


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in COMPARED])
def test_two_mirrored_replicas_train_like_one(case, one_and_two_replicas):
  one, two = one_and_two_replicas
  _compare(case, one, two)
  if case.startswith("dynamic"):
    assert int(one[case + "/log/revisions"]) == int(two[case + "/log/revisions"]) == 3


@pytest.mark.parametrize("case", [c[0] for c in CASES if c not in COMPARED])
def test_batch_norm_with_an_empty_replica_trains_and_logs_the_saved_models_validation(
    case, one_and_two_replicas):
  """49 examples in batches of 16 for training and validation: one of two replicas gets no
  example of the last batch. Training finishes with finite weights and losses; every example
  counts once in the logged accuracy; the logged val_loss and val_accuracy are what the model
  (the replicas' mean batch norm statistics, as saved) gives on the 49 examples."""
  examples = next(c[4] for c in CASES if c[0] == case)
  for results in one_and_two_replicas:
    weights = [v for k, v in results.items() if k.startswith(case + "/") and "/log/" not in k]
    assert weights and all(np.all(np.isfinite(w)) for w in weights), case
    log = {k.split("/log/")[1]: float(v) for k, v in results.items()
           if k.startswith(case + "/log/")}
    assert all(np.isfinite(v) for v in log.values()), log
    for key in ("accuracy", "val_accuracy"):  # a count of examples over 49
      assert log[key] * examples == pytest.approx(round(log[key] * examples), abs=1e-3), log
    assert log["val_loss"] == pytest.approx(log["numpy_val_loss"], rel=1e-5), log
    assert log["val_accuracy"] == pytest.approx(log["numpy_val_accuracy"], abs=1e-6), log


@pytest.mark.slow
def test_two_workers_on_localhost_train_like_one_replica(tmp_path, one_and_two_replicas):
  one, _ = one_and_two_replicas
  cases = [c for c in CASES if c[0] == "momentum_step"]  # one step: workers start slowly
  for workers in two_workers(tmp_path, cases):
    for case, *_ in cases:
      _compare(case, one, workers)


def two_workers(tmp_path, cases, script=_CHILD):
  """``script``'s ``cases`` run by two workers on localhost (MultiWorkerMirroredStrategy from
  TF_CONFIG); each worker's results."""
  base = _free_port_block(2)
  hosts = ["localhost:%d" % (base + i) for i in range(2)]
  procs = []
  for i in range(2):
    env = dict(_env(), TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                             "task": {"type": "worker", "index": i}}))
    procs.append(_child("workers", tmp_path / ("worker%d.npz" % i), cases, env, script))
  _wait(*procs)
  return [_load(tmp_path / ("worker%d.npz" % i)) for i in range(2)]

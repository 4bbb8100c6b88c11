"""tf.distribute for every stage: choosing the strategy, the chief, and where workers write.

``--strategy``:

* ``auto``: ``multi_worker`` when ``TF_CONFIG`` names a cluster of more than
  one task, ``mirrored`` with more than one GPU, otherwise ``default``;
* ``default``: TensorFlow's default strategy (no distribution: the first GPU, else
  the CPU, with no per-epoch distributed-iterator set-up; on 2 CPU cores
  ``OneDeviceStrategy`` cost 0.12 s per epoch and per evaluation, 8.6 s of a
  47 s teacher run on the embedded data);
* ``one_device``: ``OneDeviceStrategy`` on the first GPU, else the CPU;
* ``mirrored``: every local GPU (synchronous data parallelism);
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` across the machines of
  ``TF_CONFIG`` (each runs the same command).

``--batch_size`` is the **global** batch: Keras splits each batch across the
replicas. Only the chief (the ``chief`` task, else worker 0) writes the run
directory: artifacts, the manifest, TensorBoard and backups. The other
workers run the same code (saving is collective under
``MultiWorkerMirroredStrategy``) but write to a private temporary directory
that is removed when they exit; they read upstream artifacts and backups
from the shared run directory.

Entry points call :func:`setup` right after parsing flags: it validates the
invocation and creates the strategy in the order each needs (a multi-worker
strategy must exist before TensorFlow runs any op). Library code asks
:func:`strategy`, which is TF's default (no distribution) until then, as in
tests that call a stage's ``run`` directly.
"""

import atexit
import json
import os
import shutil
import tempfile
from typing import Optional

from pipelines.config.errors import ConfigError
from pipelines.runtime import progress

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")

_STATE = {"strategy": None, "name": None, "tmp": None, "barrier": None}


def tensorflow():
  """TensorFlow (through :mod:`models.compat`), imported at the first call: the runtime layer
  decides and records without it, and the stages' checks run before it loads."""
  from models.compat import tf  # pylint: disable=g-import-not-at-top
  return tf


def cluster_size(environ=os.environ) -> int:
  """Number of tasks (chief + workers) ``TF_CONFIG`` names; 0 without a usable TF_CONFIG."""
  text = environ.get("TF_CONFIG")
  if not text:
    return 0
  try:
    cluster = json.loads(text).get("cluster", {})
  except ValueError:
    raise ConfigError("TF_CONFIG is not valid JSON: %s" % text[:200]) from None
  return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def resolve_name(name: str, num_gpus: Optional[int] = None, environ=os.environ) -> str:
  """The concrete strategy ``name`` means here (``auto`` decided; no TensorFlow unless needed)."""
  if name not in STRATEGIES:
    raise ConfigError("--strategy=%s is not one of %s" % (name, ", ".join(STRATEGIES)))
  if name == "multi_worker" and cluster_size(environ) < 1:
    raise ConfigError("--strategy=multi_worker needs TF_CONFIG naming the cluster and this task "
                      "(see launch/multiworker_local.sh)")
  if name != "auto":
    return name
  if cluster_size(environ) > 1:
    return "multi_worker"
  if num_gpus is None:
    tf = tensorflow()
    num_gpus = len(tf.config.list_physical_devices("GPU"))
  return "mirrored" if num_gpus > 1 else "default"


def init(name: str = "auto"):
  """Creates the process' strategy (once; call before any other TensorFlow work)."""
  if _STATE["strategy"] is not None:
    if _STATE["name"] != resolve_name(name):
      raise RuntimeError("strategy already %s" % _STATE["name"])
    return _STATE["strategy"]
  tf = tensorflow()
  resolved = resolve_name(name)
  if resolved == "multi_worker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif resolved == "mirrored":
    strategy = tf.distribute.MirroredStrategy()
  elif resolved == "default":
    strategy = tf.distribute.get_strategy()
  else:
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
  _STATE.update(strategy=strategy, name=resolved)
  return strategy


def setup(name: str, validate) -> None:
  """``validate()`` the invocation and create the strategy, in the order each needs.

  Collective ops must be configured before TensorFlow runs any op, and
  validation may run some (preparing the embedded dataset), so a multi-worker
  strategy is created first; any other after validation, so that a bad flag
  costs no device initialisation.
  """
  if name == "multi_worker" or (name == "auto" and cluster_size() > 1):
    init(name)
  validate()
  init(name)


def strategy():
  """The strategy :func:`init` made, else TensorFlow's default one."""
  if _STATE["strategy"] is not None:
    return _STATE["strategy"]
  tf = tensorflow()
  return tf.distribute.get_strategy()


def holds_distributed_variables(model) -> bool:
  """True if ``model`` has a weight that a strategy distributes (built in a mirrored or
  multi-worker strategy's scope)."""
  tf = tensorflow()
  return any(isinstance(w, tf.distribute.DistributedValues) for w in model.weights)


def name() -> str:
  return _STATE["name"] or "default"


def is_chief() -> bool:
  """True unless this process is a non-chief worker of a multi-worker run."""
  s = _STATE["strategy"]
  resolver = getattr(s, "cluster_resolver", None) if s is not None else None
  if resolver is None or not getattr(resolver, "task_type", None):
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_index_and_count():
  """``(index, count)`` of this process among the chief and workers of a multi-worker run (the
  chief first, then the workers in order); ``(0, 1)`` otherwise."""
  s = _STATE["strategy"]
  resolver = getattr(s, "cluster_resolver", None) if s is not None else None
  if resolver is None or not getattr(resolver, "task_type", None):
    return 0, 1
  cluster = resolver.cluster_spec().as_dict()
  tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))] + [
      ("worker", i) for i in range(len(cluster.get("worker", [])))]
  me = (resolver.task_type, resolver.task_id)
  return (tasks.index(me), len(tasks)) if me in tasks else (0, 1)


def output_dir(path: str) -> str:
  """Where this process writes what the chief writes at ``path`` (a private temp dir if not chief)."""
  if is_chief():
    return path
  if _STATE["tmp"] is None:
    _STATE["tmp"] = tempfile.mkdtemp(prefix="kdprune-worker-")
    atexit.register(shutil.rmtree, _STATE["tmp"], ignore_errors=True)
  out = os.path.join(_STATE["tmp"], os.path.abspath(path).lstrip(os.sep))
  os.makedirs(out, exist_ok=True)
  return out


def barrier() -> None:
  """Waits until every worker gets here (a tiny all-reduce); a no-op without multiple workers."""
  s = _STATE["strategy"]
  if s is None or _STATE["name"] != "multi_worker":
    return
  if _STATE.get("barrier") is None:
    tf = tensorflow()

    # A function, not eager calls: an eager all-reduce under MultiWorkerMirroredStrategy runs on
    # a thread pool that a failed collective leaves open (Python then prints a traceback of its
    # teardown at exit, after kdprune's one-line error), and warns of its overhead every time.
    @tf.function(autograph=False)
    def all_reduce_one():
      return s.reduce("SUM", s.run(lambda: tf.constant(1.0)), axis=None)
    _STATE["barrier"] = all_reduce_one
  _STATE["barrier"]()


def finish() -> None:
  """The exit handshake of a multi-worker process whose work is done; a no-op otherwise.

  In the last collective before the processes exit (a stage's final :func:`barrier`), one process
  can complete its part while a peer's part still reads from it; if the first then exits, the
  peer's collective is aborted ("tasks unhealthy (stopped sending heartbeats)") and a run that
  finished fails on the chief (3 of 14 two-worker runs; BUILD_NOTES.md, "Pitfall: a process
  exiting inside the last collective"). One more
  barrier first: a process completes it only when every peer has entered it, that is, has
  finished the previous collective. This last one may fail when a peer, done with everything,
  has already exited: that failure is expected and ignored. Call it once, after success.
  """
  if _STATE["strategy"] is None or _STATE["name"] != "multi_worker":
    return
  tf = tensorflow()
  try:
    barrier()
  except tf.errors.OpError as e:
    progress.debug("exit handshake: a peer had already left (%s)" % type(e).__name__)

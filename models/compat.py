"""The one place kdprune imports Keras (and where TensorFlow is first imported).

tfmot 0.8 only works with Keras 2 (``tf_keras``); TensorFlow 2.16+ resolves
``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set *before*
TensorFlow is imported. Every kdprune module takes ``keras`` from here.

TensorFlow 2.21 prints start-up lines from C++ before its logging is set up,
which no environment variable silences ("oneDNN custom operations are on",
"Could not find cuda drivers" and, at device initialisation, "failed call to
cuInit" on machines without a GPU; CPU-feature notes). They would bury
kdprune's one-line errors, so the import and device initialisation run with
stderr captured and everything *except* those known lines is written back:
real start-up errors (missing CUDA libraries or a failing driver on a GPU node,
Python warnings) still show. Set ``KDPRUNE_TF_STARTUP_LOGS=1`` to see
everything.

Example:
  >>> from models.compat import keras
  >>> keras.__name__.startswith("tf_keras")
  True
"""

import contextlib
import os
import re
import sys
import tempfile
from typing import Callable, Sequence

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_STARTUP_NOISE = [re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^I\d{4} [^\]]*port\.cc:\d+\] oneDNN custom operations are on",
    r"^I\d{4} [^\]]*cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    r"^I\d{4} [^\]]*cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler",
)]


# CUDA-enabled TensorFlow logs this ERROR at device initialisation on machines
# without an NVIDIA GPU. It is dropped only where no NVIDIA device node exists;
# on a GPU node it means a real driver problem and is shown.
_NO_GPU_CUINIT = re.compile(r"^E\d{4} [^\]]*cuda_platform\.cc:\d+\] failed call to cuInit: .*"
                            r"(UNKNOWN ERROR \(303\)|CUDA_ERROR_NO_DEVICE)")


def _has_nvidia_device() -> bool:
  return any(name.startswith("nvidia") for name in os.listdir("/dev")) if os.path.isdir("/dev") \
      else True


def is_startup_noise(line: str) -> bool:
  if any(p.search(line) for p in _STARTUP_NOISE):
    return True
  return bool(_NO_GPU_CUINIT.search(line)) and not _has_nvidia_device()


@contextlib.contextmanager
def native_output_filtered(is_noise: Callable[[str], bool] = is_startup_noise,
                           streams: Sequence[str] = ("stderr",)):
  """Captures what C++ code writes to the process' stderr (and/or stdout) file descriptors.

  Native code writes to file descriptors 2 and 1 whatever ``sys.stderr`` is
  (a test runner may have replaced it), so those are redirected. Afterwards
  every captured line for which ``is_noise`` is false is written back to the
  Python stream, so real errors still show.
  """
  if os.environ.get("KDPRUNE_TF_STARTUP_LOGS") == "1":
    yield
    return
  targets = []
  for name in streams:
    stream = getattr(sys, name)
    stream.flush()
    fd = 2 if name == "stderr" else 1
    targets.append((stream, fd, os.dup(fd), tempfile.TemporaryFile()))
  for _, fd, _, capture in targets:
    os.dup2(capture.fileno(), fd)
  try:
    yield
  finally:
    for stream, fd, saved, capture in targets:
      stream.flush()
      os.dup2(saved, fd)
      os.close(saved)
      capture.seek(0)
      for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
        if not is_noise(line):
          stream.write(line)
      stream.flush()
      capture.close()


def _import_tensorflow():
  if "tensorflow" in sys.modules:
    import tensorflow  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    return tensorflow, tf_keras
  with native_output_filtered():
    import tensorflow  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    # Initialise devices now, inside the capture: that is when CUDA builds
    # report (on stderr) whether they found a GPU.
    tensorflow.config.list_physical_devices()
  return tensorflow, tf_keras


def _skip_tfmots_keras3_probe():
  """tfmot 0.8.1's ``prune_registry`` runs ``from keras.engine import base_layer`` (or
  ``keras.src.engine``): with Keras 3 installed as ``keras`` that imports all of Keras 3 (0.6 s,
  matplotlib included, in every process) only to find it has no such package, and tfmot falls
  back to no ``base_layer``. Where the installed Keras 3 has neither package, both imports are
  answered "absent" at once, as they would end anyway; ``import keras`` itself is untouched."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if "keras" in sys.modules:
    return
  try:
    spec = importlib.util.find_spec("keras")
  except (ImportError, ValueError):
    return
  locations = list(spec.submodule_search_locations or []) if spec else []
  for probe in ("keras.engine", "keras.src.engine"):
    parts = probe.split(".")[1:]
    if not any(os.path.exists(os.path.join(l, *parts)) for l in locations):
      sys.modules.setdefault(probe, None)


tf, keras = _import_tensorflow()
_skip_tfmots_keras3_probe()

__all__ = ["keras", "tf", "describe_keras_object", "output_dtype", "plain"]


def plain(fn: Callable) -> Callable:
  """``fn`` for ``tf.data`` as written, not rewritten by AutoGraph.

  ``Dataset.map`` runs every function through AutoGraph, which parses and rewrites its source:
  0.65 s per process for kdprune's own input functions, which have no data-dependent Python
  control flow to convert (BUILD_NOTES.md, "Pitfall: AutoGraph converts tfmot's wrappers in every
  process"). Only kdprune's functions are marked.
  """
  return tf.autograph.experimental.do_not_convert(fn)


def output_dtype():
  """The ``dtype`` for a model's output (``logits``) layer: ``"float32"`` under a mixed policy.

  Keras' mixed-precision guide keeps the last layer in float32: float16
  logits lose precision in the softmax / distillation temperature and can
  overflow. Under a float32 policy this is ``None`` (the layer follows the
  global policy), so float32 models, their configs, fingerprints and saved
  files are exactly what they were.
  """
  policy = keras.mixed_precision.global_policy()
  return "float32" if policy.compute_dtype != policy.variable_dtype else None


def describe_keras_object(obj) -> str:
  """Names the Keras flavour of ``obj`` for error messages."""
  module = type(obj).__module__ or ""
  if module.startswith("keras") and not module.startswith("keras_"):
    return "a Keras 3 object (%s.%s)" % (module, type(obj).__name__)
  if module.startswith("tf_keras"):
    return "a tf_keras object (%s)" % type(obj).__name__
  return "a %s.%s" % (module, type(obj).__name__)

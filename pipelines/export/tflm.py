"""Running a ``.tflite`` in TensorFlow Lite Micro's own interpreter (the ``tflite-micro`` package).

TFLM is the runtime of microcontrollers: one tensor arena of a fixed size holds every tensor the
model computes, and the model itself stays in flash. :func:`run` feeds a whole set of inputs
through TFLM's interpreter (batch 1, as on a device); :func:`smallest_arena` finds the smallest
arena the file runs in, by running it.

Each run happens in a child process (``python -c`` on the few lines of :data:`_CHILD`: numpy
and ``tflite_micro`` only): TFLM's Python interpreter can crash the process that built it after
an arena too small was refused (a segmentation fault on the next interpreter), and the arena
search refuses many on purpose. The child reports TFLM's own record of the arena it used
(``RecordingMicroAllocator``, "Arena allocation total N bytes"), measured on this 64-bit host:
a 32-bit microcontroller's pointers and structs are smaller, so the figure is an upper bound
there.

No TensorFlow here; ``tflite_micro`` is an optional dependency (``pip install "kdprune[tflm]"``),
checked by :func:`missing` before any work.
"""

import contextlib
import importlib.util
from importlib import metadata
import os
import re
import subprocess
import sys
import tempfile
from typing import Optional

import numpy as np

MODULE = "tflite_micro"
INSTALL = 'pip install "kdprune[tflm]" (or pip install tflite-micro)'
ALIGNMENT = 16  # TFLM aligns its arena allocations to 16 bytes: the search's step
MAX_ARENA = 1 << 30

# The child: <model.tflite> <arena bytes> <inputs.npy> <outputs.npy>. Exit 3: the arena is too
# small (TFLM refused to allocate the tensors); 0: outputs written, the allocations on stderr.
_CHILD = r"""
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model, arena, inputs, outputs = sys.argv[1:5]
with open(model, "rb") as f:
  data = f.read()
try:
  interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(arena))
except RuntimeError as e:
  sys.stderr.write("kdprune: arena too small: %s\n" % e)
  sys.exit(3)
x = np.load(inputs)
out = []
for i in range(len(x)):
  interpreter.set_input(x[i:i + 1], 0)
  interpreter.invoke()
  out.append(np.array(interpreter.get_output(0)).reshape(1, -1))
np.save(outputs, np.concatenate(out))
sys.stderr.flush()
interpreter.print_allocations()
"""
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")


class TflmError(RuntimeError):
  """TFLM's interpreter could not run the file (its own last line says why)."""


def missing() -> Optional[str]:
  """None when ``tflite_micro`` can be imported, else the one line that says how to add it."""
  if importlib.util.find_spec(MODULE) is not None:
    return None
  return "TFLite Micro's Python interpreter is not installed: %s" % INSTALL


def version() -> str:
  """``tflite-micro <version>`` of the installed package (without importing it)."""
  try:
    return "tflite-micro %s" % metadata.version("tflite-micro")
  except Exception:  # pylint: disable=broad-except
    return "tflite-micro"


def _child(model_path: str, arena: int, x: np.ndarray, tmp: str, probe: bool = False):
  """Runs the child on ``x``; returns ``(outputs or None when the arena is too small, recorded
  arena bytes)``. Raises :class:`TflmError` when TFLM fails otherwise; a ``probe`` (an arena
  that may be too small) counts any failure as "too small": TFLM can crash, not refuse, when a
  kernel's scratch buffer does not fit."""
  inputs, outputs = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
  np.save(inputs, x)
  done = subprocess.run([sys.executable, "-c", _CHILD, model_path, str(arena), inputs, outputs],
                        capture_output=True, text=True, check=False)
  if done.returncode == 3 or (probe and done.returncode != 0):
    return None, None
  if done.returncode != 0:
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    raise TflmError("TFLM's interpreter failed (exit %d): %s" % (
        done.returncode, lines[-1] if lines else "no message"))
  total = _TOTAL.search(done.stderr)
  return np.load(outputs), int(total.group(1)) if total else None


def _first_fit(model_path: str, x: np.ndarray, tmp: str, start: int):
  """The outputs and the recorded arena of a run in an arena from ``start`` up, doubled until
  TFLM can allocate the model."""
  arena = start
  while arena <= MAX_ARENA:
    outputs, recorded = _child(model_path, arena, x, tmp)
    if outputs is not None:
      return outputs, recorded, arena
    arena *= 2
  raise TflmError("TFLM could not allocate the model in %d bytes of arena" % MAX_ARENA)


def smallest_arena(data: bytes, example: np.ndarray) -> dict:
  """The smallest tensor arena (a multiple of :data:`ALIGNMENT`) in which TFLM runs ``data`` on
  ``example`` (one input, already of the input tensor's type, batch 1), found by running it:
  TFLM's record of a run in a large arena first, then that size checked, and searched by
  bisection when it is not the smallest (the record leaves out the temporary buffers some
  kernels take while they prepare: a fully connected student needed 2,736 bytes where the
  record said 2,016).

  Returns ``{"arena_bytes", "recorded_bytes", "probes"}``.
  """
  with _model_file(data) as (tmp, model_path):
    x = np.asarray(example)[None]
    _, recorded, fits = _first_fit(model_path, x, tmp, max(10 * len(data), 64 * 1024))
    probes = [0]

    def runs(arena: int) -> bool:
      probes[0] += 1
      return _child(model_path, arena, x, tmp, probe=True)[0] is not None

    guess = -(-(recorded or fits) // ALIGNMENT) * ALIGNMENT
    fits_guess = runs(guess)
    if fits_guess and not runs(guess - ALIGNMENT):
      best = guess
    else:  # bisection between a size that fails (lo) and one that runs (hi)
      lo, hi = (0, guess - ALIGNMENT) if fits_guess else (guess, fits)
      while hi - lo > ALIGNMENT:
        mid = (lo + hi) // 2 // ALIGNMENT * ALIGNMENT
        if mid <= lo:
          break
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
      best = hi
  return {"arena_bytes": int(best), "recorded_bytes": recorded, "probes": probes[0]}


@contextlib.contextmanager
def _model_file(data: bytes):
  """``(a temporary folder, the .tflite written in it)`` for the child processes to read."""
  with tempfile.TemporaryDirectory(prefix="kdprune-tflm-") as tmp:
    model_path = os.path.join(tmp, "model.tflite")
    with open(model_path, "wb") as f:
      f.write(data)
    yield tmp, model_path


def run(data: bytes, x: np.ndarray, arena: int) -> np.ndarray:
  """TFLM's outputs for every row of ``x`` (already of the input tensor's type), one invoke per
  row in an arena of ``arena`` bytes: ``[N, outputs]`` of the output tensor's type."""
  with _model_file(data) as (tmp, model_path):
    outputs, _ = _child(model_path, arena, np.asarray(x), tmp)
    if outputs is None:
      raise TflmError("TFLM could not allocate the model in an arena of %d bytes" % arena)
    return outputs

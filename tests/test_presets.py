"""Every preset in launch/presets/ parses and validates as kdprune-pipeline would run it."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = sorted(glob.glob(os.path.join(ROOT, "launch", "presets", "*.cfg")))

# Parses the flags and validates every stage's config, in a child process (absl's FLAGS are
# global); no data is read and nothing is trained.
_CHECK = """
import sys
from absl import flags
from pipelines.cli import flags as kflags
from pipelines.stages import pipeline
kflags.define_flags()
flags.FLAGS(["kdprune-pipeline", "--flagfile=" + sys.argv[1], "--workdir=" + sys.argv[2]])
config = kflags.pipeline_config_from_flags()
pipeline.validate(config)
print(config.student.model.name, config.student.pruning.target)
"""


def _check(preset, tmp_path):
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  return subprocess.run([sys.executable, "-c", _CHECK, preset, str(tmp_path / "run")], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=120)


def test_there_are_presets():
  assert {"default.cfg", "mnist.cfg", "mnist_5kb.cfg", "mnist_mlp_student.cfg"} <= {
      os.path.basename(p) for p in PRESETS}


@pytest.mark.parametrize("preset", PRESETS, ids=os.path.basename)
def test_preset_validates_and_its_header_names_itself(preset, tmp_path):
  done = _check(os.path.relpath(preset, ROOT), tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(preset) as f:
    header = f.read()
  commands = re.findall(r"--flagfile=(\S+)", header.split("\n--", 1)[0])
  assert commands and all(c == os.path.relpath(preset, ROOT) for c in commands), commands


def test_a_broken_preset_fails_the_check(tmp_path):
  bad = tmp_path / "bad.cfg"
  bad.write_text("--flagfile=launch/presets/mnist.cfg\n--final_sparsity=1.5\n")
  done = _check(str(bad), tmp_path)
  assert done.returncode != 0 and "final_sparsity" in done.stderr


_DEFAULTS = """
import sys
from absl import flags
from pipelines import config as configs
from pipelines.cli import flags as kflags
kflags.define_flags()
args = ["kdprune-pipeline", "--workdir=" + sys.argv[2]] + (["--flagfile=" + sys.argv[1]]
                                                          if sys.argv[1] else [])
flags.FLAGS(args)
c = kflags.pipeline_config_from_flags()
built_in = configs.PipelineConfig()
for kind in ("teacher", "student", "qat"):
  got, want = getattr(c, kind), getattr(built_in, kind)
  assert got.train == want.train, (kind, got.train, want.train)
  assert getattr(got, "model", None) == getattr(want, "model", None), kind
import dataclasses
got = c.student.pruning  # default.cfg spells out --final_sparsity=0.9, the built-in target
assert got.target == built_in.student.pruning.target
assert dataclasses.replace(got, final_sparsity=None) == built_in.student.pruning, got
assert c.student.distill == built_in.student.distill
print("same")
"""


@pytest.mark.parametrize("flagfile", ["", "launch/presets/default.cfg"])
def test_the_commands_defaults_and_default_cfg_are_the_built_in_defaults(flagfile, tmp_path):
  # The flags once kept their own copy of the defaults (30 epochs) after the configs' changed.
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  done = subprocess.run([sys.executable, "-c", _DEFAULTS, flagfile, str(tmp_path / "run")],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0 and "same" in done.stdout, done.stderr[-2000:]


_STAGES = """
import sys
from absl import flags
from pipelines.cli import flags as kflags
from pipelines.runtime import rundir
kflags.define_flags()
flags.FLAGS(["kdprune-pipeline", "--flagfile=" + sys.argv[1], "--workdir=" + sys.argv[2]])
c = kflags.pipeline_config_from_flags()
print(rundir.fingerprint(c.teacher.resolved()), c.student.name, c.student.model.name, c.student.pruning.target,
      c.student.pruning.layer_sparsity, c.export.embed_preprocessing)
"""


def test_the_5kb_preset_shares_the_mnist_teacher_and_keeps_its_own_student(tmp_path):
  """Both MNIST presets in one --workdir train one teacher (same fingerprint) and two students."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  out = {}
  for preset in ("mnist.cfg", "mnist_5kb.cfg"):
    done = subprocess.run([sys.executable, "-c", _STAGES, "launch/presets/" + preset,
                           str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out[preset] = done.stdout.split()
  assert out["mnist.cfg"][0] == out["mnist_5kb.cfg"][0]  # the teacher's fingerprint
  assert out["mnist.cfg"][1] == "default" and out["mnist_5kb.cfg"][1] == "tiny5kb"
  assert out["mnist_5kb.cfg"][2] == "tinycnn"
  assert out["mnist_5kb.cfg"][-1] == "False"  # the record beside the file, not inside it
  assert out["mnist.cfg"][-1] == "True"

"""Writes docs/flags.md, the flags reference, from the flag definitions themselves.

  python docs/gen_flags.py          # rewrite docs/flags.md
  python docs/gen_flags.py --check  # exit 1 if docs/flags.md is not what it would write

Every stage command (kdprune-teacher, -student, -qat, -export, -pipeline, -sweep, -search)
defines the same flags (``pipelines.cli.flags.define_flags``); kdprune-predict defines its own
(``define_predict_flags``); absl adds its standard ones. The flags are listed in the order they
are defined, cut into sections at the flags named in ``SECTIONS``. tests/test_docs.py checks
that the file is current. Importing the flags module does not import TensorFlow.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "flags.md")

# (title, the first flag of the section, one line about it). A section runs until the next
# one's first flag; a flag defined later among its neighbours lands in their section.
SECTIONS = (
    ("Run directory and execution", "workdir",
     "Where a run lives, what reruns, how training is distributed."),
    ("Data", "dataset", "The source and how examples are prepared: see [Data sources](guide/data.md)."),
    ("Teacher model", "teacher_model",
     "The teacher family built when no `--teacher_path` is given: see "
     "[Models and teachers](guide/models.md)."),
    ("Teacher training", "teacher_epochs", "The teacher stage's training loop."),
    ("Imported teachers", "teacher_path", "A teacher trained elsewhere."),
    ("Student model", "student_model", "The student family."),
    ("Student training", "student_epochs", "The student stage's training loop."),
    ("Student: source, distillation and pruning", "student_weights",
     "See [Distillation](guide/distillation.md) and [Pruning methods](guide/pruning.md)."),
    ("QAT training", "qat_epochs", "The QAT stage's training loop."),
    ("QAT and export", "qat_scheme", "See [QAT, export and serving](guide/export.md)."),
    ("Sweep", "sparsities", "kdprune-sweep: see [Sweep and search](guide/search.md)."),
    ("Search", "max_drop", "kdprune-search: see [Sweep and search](guide/search.md)."),
)

ABSL_MODULES = ("absl.flags", "absl.app", "absl.logging")


def _escape(text) -> str:
  return " ".join(str(text).split()).replace("|", "\\|")


def _default(flag) -> str:
  value = flag.default
  if value is None or value == [] or value == ():
    return "(none)"
  if value == "":
    return "(empty)"
  if isinstance(value, bool):
    return "`true`" if value else "`false`"
  if isinstance(value, (list, tuple)):
    return "`%s`" % ",".join(str(v) for v in value)
  return "`%s`" % value


def _help(flag) -> str:
  text = " ".join((flag.help or "").split())
  if text and text[-1] not in ".?)":
    text += "."
  values = getattr(flag.parser, "enum_values", None) or getattr(flag.parser, "values", None)
  if values and not isinstance(flag.default, bool):
    text += " One of: %s." % ", ".join("`%s`" % v for v in values)
  if getattr(flag, "boolean", False) and type(flag).__name__ == "BooleanFlag":
    text += " `--no%s` sets it false." % flag.name
  return _escape(text)


def _table(flag_list):
  lines = ["| flag | default | what it does |", "| --- | --- | --- |"]
  for f in flag_list:
    name = "`--%s`" % f.name
    if type(f).__name__ == "MultiFlag":
      name += " (repeatable)"
    lines.append("| %s | %s | %s |" % (name, _escape(_default(f)), _help(f)))
  return lines


def collect():
  """{"stage": [flags in definition order], "predict": [...], "absl": [...]} (absl Flag objects)."""
  sys.path.insert(0, ROOT)
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from pipelines.cli import flags as kflags  # pylint: disable=g-import-not-at-top

  fv = flags.FLAGS
  before = set(fv)
  kflags.define_flags()
  stage = [f for f in fv.flags_by_module_dict().get(kflags.__name__, []) if f.name not in before]
  defined = {f.name for f in stage}
  kflags.define_predict_flags()
  predict = [f for f in fv.flags_by_module_dict()[kflags.__name__] if f.name not in defined
             and f.name not in before]
  app.define_help_flags()
  absl_flags = {}
  for name in sorted(fv):
    f = fv[name]
    if name in defined or f in predict:
      continue
    module = fv.find_module_defining_flag(name) or ""
    if module.startswith(ABSL_MODULES):
      absl_flags[f.name] = f
  return {"stage": stage, "predict": predict, "absl": [absl_flags[n] for n in sorted(absl_flags)]}


def render(groups=None) -> str:
  groups = groups or collect()
  stage = groups["stage"]
  names = [f.name for f in stage]
  starts = []
  for title, first, blurb in SECTIONS:
    if first not in names:
      raise SystemExit("gen_flags: section %r starts at --%s, which is no longer defined; "
                       "edit SECTIONS in docs/gen_flags.py" % (title, first))
    starts.append((names.index(first), title, blurb))
  starts.sort()
  if starts[0][0] != 0:
    raise SystemExit("gen_flags: --%s comes before the first section" % names[0])
  out = [
      "# Flags reference",
      "",
      "<!-- Generated by `python docs/gen_flags.py` from the flag definitions; do not edit. "
      "tests/test_docs.py fails when this file is stale. -->",
      "",
      "Every stage command (`kdprune-teacher`, `kdprune-student`, `kdprune-qat`, "
      "`kdprune-export`, `kdprune-pipeline`, `kdprune-sweep`, `kdprune-search`, and their "
      "`python -m pipelines.cli.<stage>` forms) takes the same flags, defined once in "
      "`pipelines/cli/flags.py`; each stage reads the ones that concern it, and `--workdir` is "
      "required. `kdprune-predict` has flags of its own. Flags are given as `--name=value`; a "
      "bad value or combination stops the command in one line with exit status 2 before any "
      "work (see [Troubleshooting](guide/troubleshooting.md)). `--flagfile=FILE` reads flags "
      "from a file (the presets in `launch/presets/`); flags after it override the file.",
      "",
      "A default of (none) means the flag is unset: the help says what is used then.",
      "",
  ]
  for i, (start, title, blurb) in enumerate(starts):
    end = starts[i + 1][0] if i + 1 < len(starts) else len(stage)
    out += ["## %s" % title, "", blurb, ""] + _table(stage[start:end]) + [""]
  out += ["## kdprune-predict", "",
          "Serves an export on raw inputs: see [QAT, export and serving](guide/export.md).", ""]
  out += _table(groups["predict"]) + [""]
  out += ["## absl's standard flags", "",
          "Every command also takes absl's own flags, among them `--flagfile`, `--helpfull` "
          "(every flag with its default) and `--verbosity` (`-1`: warnings and errors only).", ""]
  out += _table(groups["absl"]) + [""]
  return "\n".join(out)


def main(argv):
  text = render()
  if "--check" in argv[1:]:
    with open(OUT) as f:
      if f.read() != text:
        print("docs/flags.md is stale: run python docs/gen_flags.py", file=sys.stderr)
        return 1
    return 0
  with open(OUT, "w") as f:
    f.write(text)
  print("wrote %s" % os.path.relpath(OUT, ROOT))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))

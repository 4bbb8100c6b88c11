"""Every kdprune flag, defined once, all optional.

As in TF Model Garden, flags are defined in one place so that libraries and
tests never depend on them; each binary calls :func:`define_flags` and marks
what it needs as required. ``*_config_from_flags`` turn parsed flags into the
frozen config dataclasses the stages take.
"""

from absl import flags

from models.spec import APPLICATION_FAMILIES, ModelSpec, describe_families
from pipelines import config as configs
from pipelines.config.errors import ConfigError
from pipelines.runtime import distribute

FLAGS = flags.FLAGS
PROGRESS = ("auto", "bar", "epoch", "none")

# Per-stage defaults of the training flags (--<stage>_epochs etc.): the stage configs' own, so the
# commands and the Python API start from the same values.
TEACHER_TRAIN = configs.TeacherConfig().train
TEACHER_MODEL = configs.TeacherConfig().model
STUDENT_TRAIN = configs.StudentConfig().train
STUDENT_MODEL = configs.StudentConfig().model
QAT_TRAIN = configs.QatConfig().train

_defined = False


def define_flags() -> None:
  """Defines all flags (idempotent)."""
  global _defined
  if _defined:
    return
  _defined = True
  flags.DEFINE_string("workdir", None, "Run directory: every stage writes <workdir>/<stage>/ "
                      "and <workdir>/manifest.json. Reruns skip stages that are done.")
  flags.DEFINE_bool("force", False, "Rerun stages even if the manifest says they are done "
                    "with the same config.")
  flags.DEFINE_enum("progress", "auto", PROGRESS, "Keras progress output: bar (per step), "
                    "epoch (one line per epoch), none, or auto (bar on a terminal, else epoch).")
  flags.DEFINE_enum("until", "export", ("teacher", "student", "qat", "export"), "kdprune-pipeline "
                    "stops after this stage (teacher -> student -> qat -> export).")
  flags.DEFINE_enum("strategy", "auto", distribute.STRATEGIES,
                    "tf.distribute strategy of every training stage: auto (multi_worker when "
                    "TF_CONFIG names a cluster, mirrored with several GPUs, else default: "
                    "TensorFlow's default strategy on one device); one_device: OneDeviceStrategy. "
                    "--batch_size is global.")
  _define_data_flags()
  _define_model_flags("teacher", TEACHER_MODEL)
  define_train_flags("teacher", TEACHER_TRAIN)
  flags.DEFINE_multi_string("teacher_path", None, "Import this trained teacher instead of "
                            "training one: a tf_keras .keras/.h5 file, a Keras 3 .keras file or a "
                            "TF SavedModel directory (serving_default). Its output must have one "
                            "unit per class; the --teacher_model/--teacher_* training flags do "
                            "not apply. Repeat it to import several teachers: the students learn "
                            "from their average (of the probabilities at --temperature).")
  flags.DEFINE_enum("teacher_outputs_are", "auto", configs.TEACHER_OUTPUTS_ARE, "What an "
                    "imported teacher's outputs are: logits, probabilities (their logarithm is "
                    "used as logits), or auto (probabilities when every row is non-negative and "
                    "sums to 1).")
  _define_model_flags("student", STUDENT_MODEL)
  define_train_flags("student", STUDENT_TRAIN)
  _define_student_flags()
  define_train_flags("qat", QAT_TRAIN)
  _define_qat_export_flags()
  flags.DEFINE_list("sparsities", ["0.5", "0.75", "0.9", "0.95"], "kdprune-sweep: the final "
                    "sparsities of the unstructured students.")
  flags.DEFINE_list("structures", ["unstructured"], "kdprune-sweep: pruning structures to sweep "
                    "(unstructured, m_by_n, channels; m_by_n adds one student per width at --m_by_n, "
                    "channels one per width at --channel_fraction). kdprune-search: the structures "
                    "searched (default there: all three).")
  flags.DEFINE_list("student_widths", [], "kdprune-sweep, kdprune-search: student widths to "
                    "sweep or search (default: --student_width alone).")
  flags.DEFINE_list("pruning_methods", [], "kdprune-sweep: pruning methods to sweep (magnitude, "
                    "dynamic; default: --pruning_method alone). Dynamic students get a _dynamic "
                    "suffix; m_by_n students are magnitude-pruned only.")
  _define_search_flags()


def _define_search_flags():
  s = configs.SearchConfig()
  flags.DEFINE_float("max_drop", s.max_drop, "kdprune-search: the budget against the float "
                     "teacher on the validation split: accuracy points (classification), or how "
                     "much the MSE may exceed the teacher's, as a ratio minus 1 (regression: 0.1 "
                     "allows 1.1x). Must be > 0: an int8 student never matches the teacher "
                     "exactly.")
  flags.DEFINE_integer("max_gzip_bytes", s.max_gzip_bytes, "kdprune-search: a size budget "
                       "instead of --max_drop: the int8 student with the best validation figure "
                       "whose gzipped .tflite fits in this many bytes (e.g. a microcontroller's "
                       "flash); 0: none.", lower_bound=0)
  flags.DEFINE_enum("objective", s.objective, configs.SEARCH_OBJECTIVES, "kdprune-search: what "
                    "the chosen student minimises among those within budget: size (gzipped "
                    ".tflite) or latency (batch-1, one thread).")
  flags.DEFINE_list("search_sparsity_range", [str(v) for v in s.sparsity_range],
                    "kdprune-search: lo,hi of the final sparsity bisected for unstructured "
                    "students.")
  flags.DEFINE_list("search_channel_range", [str(v) for v in s.channel_range],
                    "kdprune-search: lo,hi of the channel fraction bisected for channels "
                    "students.")
  flags.DEFINE_float("search_tolerance", s.tolerance, "kdprune-search: a chain's bisection stops "
                     "when its bracket is narrower than this.")
  flags.DEFINE_integer("task_index", s.task_index, "kdprune-search: this task's index; it runs "
                       "chains j with j %% --num_tasks == --task_index (a SLURM array's "
                       "SLURM_ARRAY_TASK_ID, a Kubernetes Indexed Job's JOB_COMPLETION_INDEX).")
  flags.DEFINE_integer("num_tasks", s.num_tasks, "kdprune-search: how many tasks share the "
                       "search's chains.")
  flags.DEFINE_integer("parallel", 1, "kdprune-search: run this many local processes (one task "
                       "index each), then collect.")
  flags.DEFINE_bool("collect", False, "kdprune-search: only pick the best of the finished chains "
                    "(every chain must be done) and write search/.")
  flags.DEFINE_bool("search_auto_collect", True, "kdprune-search: the task that finds every chain "
                    "done collects (the --parallel children are started without it).")


def _define_qat_export_flags():
  e = configs.ExportConfig()
  flags.DEFINE_enum("qat_scheme", configs.QatConfig().scheme, configs.QAT_SCHEMES, "prune_preserve: tfmot's "
                    "sparsity-preserving 8-bit QAT (the student's zeros stay zero); default: plain "
                    "8-bit QAT (zeros that drift are set back to zero after training).")
  flags.DEFINE_integer("latency_runs", e.latency_runs, "Timed batch-1 invokes per .tflite "
                       "(one thread); the median is reported.")
  flags.DEFINE_integer("latency_warmup", e.latency_warmup, "Untimed invokes before timing.")
  flags.DEFINE_integer("representative_examples", e.representative_examples, "Training examples "
                       "that calibrate the post-training full-integer baseline.")
  flags.DEFINE_list("export_baselines", list(e.baselines), "Reference .tflite files converted and "
                    "measured beside the product: any of %s, or all, or none. The float teacher "
                    "gives the report's comparison; the student's float and post-training "
                    "quantized files show what QAT bought (each costs a conversion and a "
                    "test-set pass)." % ", ".join(configs.BASELINES))
  flags.DEFINE_flag(_int8_io_flag(e.int8_io))
  flags.DEFINE_bool("embed_preprocessing", e.embed_preprocessing, "Store the preprocessing "
                    "record (preprocessing.json, written beside the files either way) inside "
                    "every .tflite too, so kdprune-predict can run a file alone; "
                    "--noembed_preprocessing saves its bytes (about 400 gzipped) for a flash "
                    "budget of a few kilobytes.")
  flags.DEFINE_multi_string("target", list(e.targets), "The runtimes to export for, each file "
                            "checked against its rules and measured in the report (repeat the "
                            "flag, or a list): %s. litert is the product (int8, float "
                            "inputs and outputs); edgetpu: int8 (--int8_io=uint8: uint8) inputs "
                            "and outputs, Edge TPU ops only, static shapes; tflm: int8 inputs and "
                            "outputs, TFLite Micro's ops, run in its interpreter (needs "
                            "tflite-micro); xnnpack_sparse: float32 with sparse-encoded weights."
                            % ", ".join(configs.TARGETS))


def _define_student_flags():
  d, p = configs.DistillConfig(), configs.PruningConfig()
  flags.DEFINE_string("student_weights", None, "Start the student from these trained weights "
                      "(a .keras/.h5 model file, or an .h5/.weights.h5 weights file) instead of a fresh "
                      "initialisation; they must fit the built --student_model layer by layer.")
  flags.DEFINE_bool("allow_unsafe_deserialization", False, "Load a --teacher_path or "
                    "--student_weights file whose model holds Python code (a Lambda layer), "
                    "which runs when the file is loaded; only for files you trust (refused "
                    "otherwise).")
  flags.DEFINE_enum("student_keras", "2", ("2", "3"), "Which Keras builds the student: 2 (tf_keras, "
                    "pruned by tfmot) or 3 (Keras 3, pruned by kdprune's own backend with tfmot's "
                    "schedules; int8 by post-training quantization).")
  flags.DEFINE_string("student_path", None, "Your own student model file: a Keras 3 .keras "
                      "(detected from the file) or a tf_keras .keras/.h5, with its weights if "
                      "trained; it must take the data's inputs and give one output per class.")
  flags.DEFINE_string("student_name", "default", "Name of this student: it goes to "
                      "<workdir>/student/<name>/ and the manifest's student/<name>, so one teacher "
                      "can have many students.")
  flags.DEFINE_bool("distill", d.enabled, "Learn from the teacher; --nodistill trains the same "
                    "student with the same schedule on the labels alone (the ablation).")
  flags.DEFINE_float("temperature", d.temperature, "Distillation temperature T (> 0); "
                     "classification only (regression refuses any other value).")
  flags.DEFINE_float("alpha", d.alpha, "Weight of the hard-label loss: total = (1 - alpha) * "
                     "T^2 * KL(teacher || student) + alpha * cross-entropy; for regression "
                     "alpha * loss(labels) + (1 - alpha) * loss(teacher predictions).")
  flags.DEFINE_enum("teacher_outputs", d.teacher_outputs, configs.TEACHER_OUTPUTS, "cached: the "
                    "teacher runs once over the training set, its logits are written to "
                    "<workdir>/teacher/logits/ (float16) and streamed with the batches; online: "
                    "it runs in every step (inference mode); auto: cached.")
  flags.DEFINE_integer("teacher_topk", d.teacher_topk, "Cached teacher outputs keep the K largest "
                       "logits and the rest as one bucket (for many classes; 0: all of them).",
                       lower_bound=0)
  # -- feature hints and mixup (pipelines/train/features.py, pipelines/train/mixup.py) --
  flags.DEFINE_multi_string("feature_distill", [], "TEACHER_LAYER:STUDENT_LAYER[:WEIGHT] (repeat "
                            "it, or a list): add WEIGHT (1) x the L2 loss between the student "
                            "layer's output, through a learned projection that is not saved, and "
                            "the teacher layer's; the teacher then runs in every step.")
  flags.DEFINE_float("mixup", d.mixup, "Mixup ALPHA: each batch mixed with itself by a "
                     "Beta(ALPHA, ALPHA) weight, seen by the student and the teacher (online), "
                     "its hard loss the weighted labels' cross-entropies; classification; 0: off.")
  flags.DEFINE_enum("pruning_schedule", p.schedule, configs.PRUNING_SCHEDULES, "polynomial_decay: "
                    "S = S_f + (S_0 - S_f)(1 - (t - t_0)/(t_e - t_0))^exponent; constant: S_f from "
                    "--pruning_begin on.")
  flags.DEFINE_float("initial_sparsity", p.initial_sparsity, "S_0 of the polynomial schedule.")
  flags.DEFINE_float("final_sparsity", p.final_sparsity, "S_f: the sparsity every pruned layer "
                     "ends at (default 0.9; m/n for --pruning_structure=m_by_n).")
  flags.DEFINE_float("pruning_exponent", p.exponent, "Exponent of the polynomial schedule.")
  flags.DEFINE_integer("pruning_frequency", p.frequency, "Update the masks every N steps; 0: a "
                       "tenth of an epoch (1 to 100 steps).")
  flags.DEFINE_string("pruning_begin", p.begin, "When pruning starts: a step (500) or a fraction "
                      "of the planned training (0.1 or 10%).")
  flags.DEFINE_string("pruning_end", p.end, "When the final sparsity is reached: a step or a "
                      "fraction of the planned training. Refused if training cannot get there.")
  flags.DEFINE_enum("pruning_structure", p.structure, configs.PRUNING_STRUCTURES, "unstructured "
                    "magnitude pruning, m_by_n (--m_by_n zeros in every block, e.g. 2:4), or "
                    "channels (whole filters/units removed, the student rebuilt smaller).")
  flags.DEFINE_float("channel_fraction", p.channel_fraction, "Share of the units of each "
                     "shrinkable Conv2D/Dense removed by --pruning_end "
                     "(--pruning_structure=channels).")
  flags.DEFINE_string("m_by_n", "%d:%d" % p.m_by_n, "m:n for --pruning_structure=m_by_n.")
  flags.DEFINE_list("pruning_layer_sparsity", [], "Layers that end at their own final sparsity, "
                    "as layer:sparsity (e.g. logits:0.97); the others end at --final_sparsity. "
                    "Unstructured pruning only.")
  flags.DEFINE_enum("pruning_method", p.method, configs.PRUNING_METHODS, "magnitude: tfmot's "
                    "pruning, a pruned weight stays pruned; dynamic: the same schedule up to "
                    "--pruning_end, then, at the final sparsity, the mask is revised every "
                    "--mask_update_every steps until --mask_update_end (drop the smallest active "
                    "weights, regrow as many where the gradient is largest; RigL).")
  flags.DEFINE_integer("mask_update_every", p.mask_update_every, "Steps between two mask "
                       "revisions (--pruning_method=dynamic).")
  flags.DEFINE_float("drop_fraction", p.drop_fraction, "Share of the active weights revised at "
                     "the first mask revision; decays to 0 along a cosine "
                     "(--pruning_method=dynamic).")
  flags.DEFINE_string("mask_update_end", p.mask_update_end, "When mask revisions stop: a step or "
                      "a fraction of the planned training, after --pruning_end (revisions start "
                      "there; --pruning_method=dynamic).")
  flags.DEFINE_list("pruning_keep_dense", list(p.keep_dense), "Layers left dense, by name or "
                    "class name (e.g. logits,Conv2D); 'auto' also keeps layers with fewer than "
                    "%d kernel weights that hold under %d%% of the student's prunable weights." % (
                        configs.PruningConfig.MIN_PRUNABLE_WEIGHTS,
                        round(100 * configs.PruningConfig.MIN_PRUNABLE_SHARE)))


def _define_data_flags():
  d = configs.DataConfig()
  flags.DEFINE_string("dataset", d.dataset, "digits (embedded, no network), any TFDS image-"
                      "classification name (mnist, fashion_mnist, cifar10, name/config:version), "
                      "npz:/path/file.npz with x_train, y_train, x_test, y_test [, x_val, y_val], "
                      "csv:/path/file.csv (numeric columns; --target_column), images:/path/folder, "
                      "tfrecord:/path/folder (train*, test* [, validation*] files of "
                      "tf.train.Example; --tfrecord_*_key, --num_classes), "
                      "(DIR/<class>/*.jpg|png|bmp|gif, or DIR/train/<class>/... and DIR/test/..."
                      "; --image_size to resize), or "
                      "synthetic_regression[:n_samples=N,n_features=F,n_informative=I,noise=S,"
                      "seed=R] (make_regression; defaults 10000, 1000, 500, 3, 0).")
  flags.DEFINE_enum("task", d.task, configs.TASKS, "classification (integer labels) or "
                    "regression (real-valued targets: MSE/MAE, distillation to the teacher's "
                    "predictions).")
  flags.DEFINE_enum("regression_loss", d.regression_loss, configs.REGRESSION_LOSSES, "Loss of "
                    "every stage for --task=regression (val_loss is this loss on validation).")
  flags.DEFINE_string("target_column", None, "The column of a csv: dataset holding the label "
                      "(classification) or the target (regression); every other column is a "
                      "feature.")
  flags.DEFINE_float("test_fraction", d.test_fraction, "Share of a csv: or synthetic_regression "
                     "dataset held out as the test split (seeded by --seed).")
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS' own, "
                      "~/tensorflow_datasets). A prepared directory loads with no network.")
  flags.DEFINE_list("splits", [], "TFDS splits by role, as role=split (TFDS slicing allowed): "
                    "e.g. train=train,validation=validation,test=validation for a dataset whose "
                    "test split has no labels, or train=train[:90%%],validation=train[90%%:],"
                    "test=test. Default: train and test by name, validation if there is one.")
  flags.DEFINE_string("tfrecord_image_key", d.tfrecord_image_key, "--dataset=tfrecord: the "
                      "feature holding the encoded image (PNG/JPEG bytes).")
  flags.DEFINE_string("tfrecord_label_key", d.tfrecord_label_key, "--dataset=tfrecord: the "
                      "feature holding the label (int64 class id, or float target).")
  flags.DEFINE_string("tfrecord_features_key", d.tfrecord_features_key, "--dataset=tfrecord: "
                      "the float feature vector of tabular records (used when there is no image).")
  flags.DEFINE_float("validation_fraction", d.validation_fraction, "Share of train held out for "
                     "validation when the dataset has no validation split (seeded, deterministic).")
  flags.DEFINE_integer("seed", d.seed, "Seed for the validation split, shuffling and initialisation.")
  flags.DEFINE_enum("normalization", d.normalization, configs.NORMALIZATIONS, "auto: uint8 inputs "
                    "scaled to [0, 1], CSV features standardized, other floats kept; standardize: "
                    "per-channel/feature mean and std fitted on train; maxabs: each feature "
                    "divided by its largest absolute value on train; none.")
  flags.DEFINE_string("image_size", None, "H,W to resize images to (needed for TFDS datasets "
                      "whose images vary in size).")
  flags.DEFINE_integer("num_classes", None, "Number of classes of an npz dataset "
                       "(default: largest label + 1).")
  flags.DEFINE_integer("train_examples", d.train_examples, "Use only the first N training "
                       "examples (0: all). For smoke runs.", lower_bound=0)
  flags.DEFINE_flag(_cache_flag())
  flags.DEFINE_integer("cache_budget_mb", d.cache_budget_mb, "Memory budget of --cache=auto in "
                       "MiB (0: min(2 GiB, RAM / 4)).", lower_bound=0)
  flags.DEFINE_integer("batch_size", 64, "Global batch size of every training stage.")
  flags.DEFINE_bool("mixed_precision", False, "Train the teacher and the student with Keras' "
                    "mixed_float16 policy (for GPUs with float16 units; slow on CPUs). Pruning "
                    "masks and variables stay float32; QAT always trains in float32 (tfmot's "
                    "fake-quant ops need it); saved models are float32.")
  flags.DEFINE_integer("steps_per_execution", 16, "Training steps per compiled call in every "
                       "stage; cuts per-step overhead (tfmot's pruning wrappers add some per step).")


def _define_model_flags(stage: str, default: ModelSpec):
  names = ", ".join(describe_families())
  flags.DEFINE_string("%s_model" % stage, default.name, "The %s architecture: one of %s, or "
                      "package.module:function returning a Functional tf_keras model "
                      "(called as function(input_shape, num_classes))." % (stage, names))
  flags.DEFINE_float("%s_width" % stage, default.width, "Width of the %s family (units or "
                     "base filters, a whole number; for the Keras Applications families the width "
                     "multiplier, e.g. 0.35); unset: the family's default." % stage)
  flags.DEFINE_integer("%s_depth" % stage, default.depth, "Depth of the %s family (layers or "
                       "blocks); unset: the family's default." % stage)
  flags.DEFINE_float("%s_dropout" % stage, default.dropout, "Dropout rate of the %s family; "
                     "unset: the family's default." % stage)


def define_train_flags(stage: str, d: configs.TrainConfig):
  """Defines --<stage>_epochs, --<stage>_learning_rate, ... with ``d``'s values as defaults."""
  p = stage + "_"
  flags.DEFINE_integer(p + "epochs", d.epochs, "Maximum %s epochs." % stage)
  flags.DEFINE_enum(p + "optimizer", d.optimizer, configs.OPTIMIZERS, "%s optimizer." % stage)
  flags.DEFINE_float(p + "learning_rate", d.learning_rate, "Peak %s learning rate." % stage)
  flags.DEFINE_enum(p + "lr_schedule", d.lr_schedule, configs.LR_SCHEDULES, "%s learning-rate "
                    "schedule: constant, cosine (to 0 over the planned epochs) or exponential "
                    "(x lr_decay_rate per epoch)." % stage)
  flags.DEFINE_float(p + "lr_decay_rate", d.lr_decay_rate, "Per-epoch decay factor of the "
                     "exponential schedule (%s)." % stage)
  flags.DEFINE_float(p + "warmup_epochs", d.warmup_epochs, "Linear learning-rate warm-up (%s), "
                     "in epochs." % stage)
  flags.DEFINE_float(p + "weight_decay", d.weight_decay, "Decoupled weight decay (%s; adamw, "
                     "sgd)." % stage)
  flags.DEFINE_float(p + "momentum", d.momentum, "SGD momentum (%s)." % stage)
  flags.DEFINE_integer(p + "patience", d.patience, "Early stopping (%s): epochs without "
                       "improvement before stopping; 0 disables it. The best epoch is always "
                       "restored." % stage)
  flags.DEFINE_enum(p + "monitor", d.monitor, configs.MONITORS, "Metric that picks the best "
                    "%s epoch." % stage)
  flags.DEFINE_enum(p + "augment", d.augment, configs.AUGMENTATIONS, "Augment %s training "
                    "images: shift (random translation up to 10%%), flip_shift (also horizontal "
                    "flips), crop_flip (random resized crop + flip, natural images), none." % stage)
  flags.DEFINE_float(p + "min_delta", d.min_delta, "Smallest improvement of the monitored "
                     "metric that resets patience (%s)." % stage)
  flags.DEFINE_integer(p + "seed", d.seed, "Seed of the %s's initialisation, shuffling, dropout "
                       "and augmentation; unset: --seed. The validation split always follows "
                       "--seed (repeat a stage with other seeds on the same split)." % stage)


_predict_defined = False


def define_predict_flags() -> None:
  """The flags of ``kdprune-predict`` (idempotent; no stage flag is needed to serve a model)."""
  global _predict_defined
  if _predict_defined:
    return
  _predict_defined = True
  flags.DEFINE_string("model", None, "kdprune-predict: the .tflite to run, or an export folder "
                      "(export/<name>/, whose student_qat_int8.tflite is used); "
                      "preprocessing.json must lie beside it.")
  flags.DEFINE_string("input", None, "kdprune-predict: raw inputs: an .npz (array x or x_test), "
                      "a CSV with the training feature columns (by name; other columns are "
                      "ignored), an image file or a folder of images.")
  flags.DEFINE_string("output", None, "kdprune-predict: the CSV to write, one row per input: "
                      "input, prediction and, for classification, label and probability; "
                      "without it the CSV goes to standard output.")
  flags.DEFINE_integer("predict_batch_size", 256, "kdprune-predict: inputs per interpreter call.")


def parse_image_size(value):
  if value in (None, ""):
    return None
  parts = value.replace("x", ",").split(",")
  try:
    size = tuple(int(p) for p in parts)
  except ValueError:
    raise ConfigError("--image_size=%s must be H,W (two integers)" % value) from None
  if len(size) != 2 or min(size) < 1:
    raise ConfigError("--image_size=%s must be H,W (two positive integers)" % value)
  return size


def parse_splits(items):
  out = []
  for item in items or ():
    role, sep, spec = str(item).partition("=")
    if not sep or not role or not spec:
      raise ConfigError("--splits=%s must be role=split, e.g. test=validation" % item)
    out.append((role.strip(), spec.strip()))
  return tuple(out)


class _ValuedBoolParser(flags.ArgumentParser):
  """A flag's values, where the boolean spellings still parse: ``--flag`` (``true``) is
  ``true_value`` and ``--noflag`` (``false``) is ``false_value``."""

  def __init__(self, values, true_value, false_value):
    super().__init__()
    self.values, self.true_value, self.false_value = tuple(values), true_value, false_value
    self.syntactic_help = "one of %s" % "|".join(self.values)

  def parse(self, argument):
    text = str(argument).strip().lower()
    if text in ("true", "1", "t", "yes"):
      return self.true_value
    if text in ("false", "0", "f", "no"):
      return self.false_value
    if text not in self.values:
      raise ValueError("must be one of %s" % ", ".join(self.values))
    return text

  def flag_type(self):
    return "string enum"


def _valued_bool_flag(name, default, parser, help_text):
  """A flag that takes a value (``--cache=disk``) and also parses bare, as the boolean it was
  (``--cache``, ``--nocache``: absl only allows both for a flag marked boolean)."""
  flag = flags.Flag(parser, flags.ArgumentSerializer(), name, default, help_text)
  flag.boolean = True  # bare --flag and --noflag parse; --flag=VALUE takes the value
  return flag


def _cache_flag():
  """``--cache=auto|memory|disk|none``; the old boolean spellings still parse: ``--cache`` is
  ``auto`` and ``--nocache`` is ``none``."""
  return _valued_bool_flag(
      "cache", "auto", _ValuedBoolParser(configs.CACHE_MODES, "auto", "none"),
      "Where decoded examples are kept between epochs: auto (memory when the "
      "decoded splits fit --cache_budget_mb, else a file cache under the run "
      "directory), memory, disk or none. --cache is auto, --nocache is none.")


def _int8_io_flag(default: bool):
  """``--int8_io``: ``int8`` (bare, or true), ``uint8``, or ``none`` (``--noint8_io``, false)."""
  return _valued_bool_flag(
      "int8_io", "int8" if default else "none",
      _ValuedBoolParser(("none",) + configs.INT8_IO_TYPES, "int8", "none"),
      "Give the int8 .tflite models integer inputs and outputs (for integer-only accelerators): "
      "--int8_io is int8, --int8_io=uint8 uint8 (also the type of the edgetpu target's "
      "inputs and outputs); by default (--noint8_io) they take and return float32.")


def data_config_from_flags() -> configs.DataConfig:
  return configs.DataConfig(
      dataset=FLAGS.dataset,
      data_dir=FLAGS.data_dir,
      validation_fraction=FLAGS.validation_fraction,
      seed=FLAGS.seed,
      normalization=FLAGS.normalization,
      image_size=parse_image_size(FLAGS.image_size),
      num_classes=FLAGS.num_classes,
      train_examples=FLAGS.train_examples,
      cache=FLAGS.cache != "none",
      cache_mode="auto" if FLAGS.cache == "none" else FLAGS.cache,
      cache_budget_mb=FLAGS.cache_budget_mb,
      task=FLAGS.task,
      regression_loss=FLAGS.regression_loss,
      target_column=FLAGS.target_column,
      test_fraction=FLAGS.test_fraction,
      splits=parse_splits(FLAGS.splits),
      tfrecord_image_key=FLAGS.tfrecord_image_key,
      tfrecord_label_key=FLAGS.tfrecord_label_key,
      tfrecord_features_key=FLAGS.tfrecord_features_key,
  )


def model_spec_from_flags(stage: str) -> ModelSpec:
  name = FLAGS["%s_model" % stage].value
  width = FLAGS["%s_width" % stage].value
  depth = FLAGS["%s_depth" % stage].value
  if name in APPLICATION_FAMILIES:
    # The defaults above are the cnn's: an application family takes its own (multiplier 1), and
    # its depth is fixed.
    width = width if FLAGS["%s_width" % stage].present else None
    depth = None
  elif width is not None and float(width).is_integer():
    width = int(width)
  return ModelSpec(name=name, width=width, depth=depth,
                   dropout=FLAGS["%s_dropout" % stage].value)


def train_config_from_flags(stage: str) -> configs.TrainConfig:
  p = stage + "_"
  return configs.TrainConfig(
      epochs=FLAGS[p + "epochs"].value,
      batch_size=FLAGS.batch_size,
      steps_per_execution=FLAGS.steps_per_execution,
      optimizer=FLAGS[p + "optimizer"].value,
      learning_rate=FLAGS[p + "learning_rate"].value,
      lr_schedule=FLAGS[p + "lr_schedule"].value,
      lr_decay_rate=FLAGS[p + "lr_decay_rate"].value,
      warmup_epochs=FLAGS[p + "warmup_epochs"].value,
      weight_decay=FLAGS[p + "weight_decay"].value,
      momentum=FLAGS[p + "momentum"].value,
      patience=FLAGS[p + "patience"].value,
      monitor=FLAGS[p + "monitor"].value,
      min_delta=FLAGS[p + "min_delta"].value,
      augment=FLAGS[p + "augment"].value,
      seed=FLAGS[p + "seed"].value,
      # QAT trains in float32: tfmot's FakeQuant ops take float32 only.
      mixed_precision=FLAGS.mixed_precision and stage != "qat",
  )


def parse_m_by_n(value):
  try:
    m, n = (int(v) for v in str(value).split(":"))
  except ValueError:
    raise ConfigError("--m_by_n=%s must be m:n, e.g. 2:4" % value) from None
  return (m, n)


def distill_config_from_flags() -> configs.DistillConfig:
  return configs.DistillConfig(enabled=FLAGS.distill, temperature=FLAGS.temperature,
                               alpha=FLAGS.alpha, teacher_outputs=FLAGS.teacher_outputs,
                               teacher_topk=FLAGS.teacher_topk,
                               feature_distill=configs.parse_feature_distill(
                                   FLAGS.feature_distill),
                               mixup=FLAGS.mixup)


def student_config_from_flags() -> configs.StudentConfig:
  return configs.StudentConfig(
      data=data_config_from_flags(),
      model=model_spec_from_flags("student"),
      train=train_config_from_flags("student"),
      distill=distill_config_from_flags(),
      pruning=configs.PruningConfig(
          schedule=FLAGS.pruning_schedule, initial_sparsity=FLAGS.initial_sparsity,
          final_sparsity=FLAGS.final_sparsity, exponent=FLAGS.pruning_exponent,
          frequency=FLAGS.pruning_frequency, begin=FLAGS.pruning_begin, end=FLAGS.pruning_end,
          structure=FLAGS.pruning_structure, m_by_n=parse_m_by_n(FLAGS.m_by_n),
          keep_dense=tuple(FLAGS.pruning_keep_dense),
          layer_sparsity=configs.parse_layer_sparsity(FLAGS.pruning_layer_sparsity),
          method=FLAGS.pruning_method, mask_update_every=FLAGS.mask_update_every,
          drop_fraction=FLAGS.drop_fraction, mask_update_end=FLAGS.mask_update_end,
          channel_fraction=FLAGS.channel_fraction),
      name=FLAGS.student_name,
      progress=FLAGS.progress,
      weights=FLAGS.student_weights,
      allow_unsafe=FLAGS.allow_unsafe_deserialization,
      keras=int(FLAGS.student_keras),
      path=FLAGS.student_path)


def qat_config_from_flags() -> configs.QatConfig:
  return configs.QatConfig(
      data=data_config_from_flags(),
      train=train_config_from_flags("qat"),
      distill=distill_config_from_flags(),
      scheme=FLAGS.qat_scheme,
      name=FLAGS.student_name,
      progress=FLAGS.progress)


def export_config_from_flags() -> configs.ExportConfig:
  return configs.ExportConfig(
      data=data_config_from_flags(),
      name=FLAGS.student_name,
      latency_runs=FLAGS.latency_runs,
      latency_warmup=FLAGS.latency_warmup,
      representative_examples=FLAGS.representative_examples,
      int8_io=FLAGS.int8_io != "none",
      int8_io_type=FLAGS.int8_io if FLAGS.int8_io != "none" else "int8",
      baselines=_baselines(FLAGS.export_baselines),
      targets=parse_targets(FLAGS.target),
      embed_preprocessing=FLAGS.embed_preprocessing)


def parse_targets(values) -> tuple:
  """``--target``, repeated or a comma-separated list, in the order of ``configs.TARGETS``
  (unknown names are kept for ``ExportConfig.validate`` to refuse)."""
  names = [n.strip() for v in values or () for n in str(v).split(",")]
  names = [n for n in names if n]
  known = sorted((n for n in names if n in configs.TARGETS), key=configs.TARGETS.index)
  return tuple(known + [n for n in names if n not in configs.TARGETS])


def _baselines(names) -> tuple:
  """``--export_baselines``: ``all``, ``none`` or names, in the report's order."""
  names = [n.strip() for n in names if n.strip()]
  if names == ["all"]:
    return configs.BASELINES
  if names == ["none"]:
    return ()
  known = [b for b in configs.BASELINES if b in names]
  return tuple(known + [n for n in names if n not in configs.BASELINES])  # unknown: validate()


def teacher_config_from_flags() -> configs.TeacherConfig:
  return configs.TeacherConfig(
      data=data_config_from_flags(),
      model=model_spec_from_flags("teacher"),
      train=train_config_from_flags("teacher"),
      progress=FLAGS.progress,
      path=(FLAGS.teacher_path or [None])[0],
      more_paths=tuple((FLAGS.teacher_path or [])[1:]),
      outputs_are=FLAGS.teacher_outputs_are,
      allow_unsafe=FLAGS.allow_unsafe_deserialization)


def pipeline_config_from_flags() -> configs.PipelineConfig:
  return configs.PipelineConfig(teacher=teacher_config_from_flags(),
                                student=student_config_from_flags(),
                                qat=qat_config_from_flags(),
                                export=export_config_from_flags(),
                                until=FLAGS.until)


def sweep_config_from_flags() -> configs.SweepConfig:
  def floats(values, flag):
    try:
      return tuple(float(v) for v in values)
    except ValueError:
      raise ConfigError("--%s=%s must be numbers" % (flag, ",".join(values))) from None
  widths = tuple(int(w) if float(w).is_integer() else w
                 for w in floats(FLAGS.student_widths, "student_widths")) or (None,)
  return configs.SweepConfig(sparsities=floats(FLAGS.sparsities, "sparsities"),
                             structures=tuple(FLAGS.structures), widths=widths,
                             methods=tuple(FLAGS.pruning_methods) or (None,))


def search_config_from_flags() -> configs.SearchConfig:
  def pair(flag):
    values = FLAGS[flag].value
    try:
      lo, hi = (float(v) for v in values)
    except ValueError:
      raise ConfigError("--%s=%s must be lo,hi (two numbers)" % (flag, ",".join(values))) from None
    return (lo, hi)
  try:
    widths = tuple(int(w) for w in FLAGS.student_widths) or (None,)
  except ValueError:
    raise ConfigError("--student_widths=%s must be integers" % ",".join(FLAGS.student_widths)
                      ) from None
  structures = (tuple(FLAGS.structures) if FLAGS["structures"].present
                else configs.SearchConfig.structures)
  if FLAGS.max_gzip_bytes and FLAGS["max_drop"].present:
    raise ConfigError("--max_drop and --max_gzip_bytes are two budgets: give one (an accuracy "
                      "drop, or a file size within which the most accurate student wins)")
  return configs.SearchConfig(
      max_drop=FLAGS.max_drop, max_gzip_bytes=FLAGS.max_gzip_bytes, objective=FLAGS.objective,
      structures=structures, widths=widths,
      sparsity_range=pair("search_sparsity_range"), channel_range=pair("search_channel_range"),
      tolerance=FLAGS.search_tolerance, task_index=FLAGS.task_index, num_tasks=FLAGS.num_tasks)

"""How many epochs the embedded-data defaults need: teacher, student and QAT settings over seeds.

    python -m benchmarks.quickstart_epochs \\
        --teacher=30,0.002 --teacher=10,0.003 \\
        --student=30,0.002,0.1,0.75,4 --student=15,0.003,0.1,0.6,2 --seeds=0,1

Each ``--teacher=EPOCHS,LR`` trains the default ``cnn`` teacher on ``digits`` once per seed (the
stage's ``--teacher_seed``; the validation split stays ``--seed=0``) and prints test and validation
accuracy, best epoch and training seconds. Then one teacher with the *last* ``--teacher`` setting
and seed 0 is kept, and each ``--student=EPOCHS,LR,BEGIN,END,QAT_EPOCHS`` trains the default
student (pruned to 0.9) and its QAT fine-tuning once per seed: test accuracy of both, best epoch,
seconds. In one process (TensorFlow imported once), through the stage protocol's ``run_stage``.
"""

import dataclasses
import shutil
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("teacher", ["10,0.003"], "EPOCHS,LEARNING_RATE of a teacher setting.")
flags.DEFINE_multi_string("student", ["15,0.003,0.1,0.6,2"],
                          "EPOCHS,LEARNING_RATE,PRUNING_BEGIN,PRUNING_END,QAT_EPOCHS.")
flags.DEFINE_list("seeds", ["0", "1"], "Training seeds of every setting.")


def main(argv):
  del argv
  from pipelines import config as C  # pylint: disable=g-import-not-at-top
  from pipelines.runtime import distribute  # pylint: disable=g-import-not-at-top
  distribute.init("auto")
  from pipelines.runtime.execute import run_stage  # pylint: disable=g-import-not-at-top
  from pipelines.stages import qat, student, teacher  # pylint: disable=g-import-not-at-top

  quiet = lambda *_: None  # noqa: E731
  root = tempfile.mkdtemp(prefix="quickstart-epochs-")
  base_t = C.TeacherConfig(progress="none")
  for setting in FLAGS.teacher:
    epochs, lr = setting.split(",")
    for seed in FLAGS.seeds:
      cfg = dataclasses.replace(base_t, train=dataclasses.replace(
          base_t.train, epochs=int(epochs), learning_rate=float(lr), seed=int(seed)))
      wd = "%s/t" % root
      shutil.rmtree(wd, ignore_errors=True)
      o = run_stage(teacher.STAGE, cfg, wd, log=quiet)
      m = o.entry["metrics"]
      print("teacher %s seed %s: test %.4f val %.4f best epoch %d of %d, training %.1f s" % (
          setting, seed, m["test_accuracy"], m["val_accuracy"], m["best_epoch"], m["epochs_run"],
          o.entry["phases"]["training"]), flush=True)
  epochs, lr = FLAGS.teacher[-1].split(",")
  cfg = dataclasses.replace(base_t, train=dataclasses.replace(
      base_t.train, epochs=int(epochs), learning_rate=float(lr), seed=0))
  wd = "%s/s" % root
  o = run_stage(teacher.STAGE, cfg, wd, log=quiet)
  print("students' teacher %s seed 0: test %.4f" % (FLAGS.teacher[-1],
                                                    o.entry["metrics"]["test_accuracy"]))
  base_s, base_q = C.StudentConfig(progress="none"), C.QatConfig(progress="none")
  for setting in FLAGS.student:
    epochs, lr, begin, end, qat_epochs = setting.split(",")
    for seed in FLAGS.seeds:
      s = dataclasses.replace(base_s, name="s", train=dataclasses.replace(
          base_s.train, epochs=int(epochs), learning_rate=float(lr), seed=int(seed)),
          pruning=dataclasses.replace(base_s.pruning, begin=begin, end=end))
      os_ = run_stage(student.STAGE, s, wd, force=True, log=quiet)
      q = dataclasses.replace(base_q, name="s", train=dataclasses.replace(
          base_q.train, epochs=int(qat_epochs)))
      oq = run_stage(qat.STAGE, q, wd, force=True, log=quiet)
      m, mq = os_.entry["metrics"], oq.entry["metrics"]
      print("student %s seed %s: test %.4f at sparsity %.3f, best epoch %s of %d, training %.1f s"
            " | QAT test %.4f, stage %.1f s" % (
                setting, seed, m["test_accuracy"], m["sparsity"], m["best_epoch"],
                m["epochs_run"], os_.entry["phases"]["training"], mq["test_accuracy"],
                oq.entry["phases"]["total"]), flush=True)
  shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)

"""Configs: pure Python, no TensorFlow. The bottom layer of kdprune.

Every config is a frozen dataclass that validates what its values alone allow
and raises :class:`ConfigError` with one line naming the flag. ``from
pipelines.config import DataConfig, StudentConfig, ...`` reaches all of them.
"""

from pipelines.config.base import SEED_RANGE, is_seed, resolved  # noqa: F401
from pipelines.config.data import (  # noqa: F401
    CACHE_MODES,
    CSV_PREFIX,
    DEFAULT_DATASET,
    NORMALIZATIONS,
    NPZ_PREFIX,
    REGRESSION_LOSSES,
    SYNTHETIC_REGRESSION,
    TASKS,
    DataConfig,
)
from pipelines.config.distill import TEACHER_OUTPUTS, DistillConfig, parse_feature_distill  # noqa: F401
from pipelines.config.errors import ConfigError, StageError  # noqa: F401
from pipelines.config.pruning import (  # noqa: F401
    PRUNING_METHODS,
    PRUNING_SCHEDULES,
    PRUNING_STRUCTURES,
    PruningConfig,
    parse_layer_sparsity,
    parse_step_or_fraction,
)
from pipelines.config.stages import (  # noqa: F401
    EXPORT,
    IMPORT_RECORD,
    LOGITS_DIR,
    PREPROCESSING_FILE,
    PREPROCESSING_METADATA,
    PRODUCT,
    BASELINES,
    DEFAULT_TARGETS,
    INT8_IO_TYPES,
    QAT,
    QAT_SCHEMES,
    STAGES,
    STUDENT,
    SEARCH,
    SEARCH_OBJECTIVES,
    SWEEP,
    TEACHER,
    TARGETS,
    TEACHER_OUTPUTS_ARE,
    ExportConfig,
    check_targets,
    PipelineConfig,
    QatConfig,
    StudentConfig,
    SearchConfig,
    SweepConfig,
    TeacherConfig,
    check_name,
    command,
    stage_of,
)
from pipelines.config.tasks import describe_result, headline, split_metrics, task_of  # noqa: F401
from pipelines.config.train import AUGMENTATIONS, LR_SCHEDULES, MONITORS, OPTIMIZERS, TrainConfig  # noqa: F401

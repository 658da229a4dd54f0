"""ltkd_hf: Long-Tailed Knowledge Distillation, Hugging Face-native.

Importing this package registers the paper's CIFAR architectures with timm.
"""

from . import models  # noqa: F401  (registers the CIFAR architectures with timm)
from .config import DistillationConfig
from .data import ImageSplits, SplitInfo, get_class_counts, load_image_dataset, long_tailed_counts, make_long_tailed
from .evaluation import evaluation_report, group_accuracy, load_group_accuracy, write_report
from .groups import ClassGroups
from .hub import check_push_to_hub_ready, load_student, push_student, render_model_card, save_student
from .losses import available_losses, create_loss, kd_loss, ltkd_loss
from .models import CIFAR_MODEL_NAMES, create_student, load_teacher, unwrap_timm
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "CIFAR_MODEL_NAMES",
    "ClassGroups",
    "DistillationConfig",
    "DistillationTrainer",
    "ImageSplits",
    "SplitInfo",
    "__version__",
    "available_losses",
    "check_push_to_hub_ready",
    "create_loss",
    "create_student",
    "evaluation_report",
    "get_class_counts",
    "group_accuracy",
    "kd_loss",
    "load_group_accuracy",
    "load_image_dataset",
    "load_student",
    "load_teacher",
    "long_tailed_counts",
    "ltkd_loss",
    "make_long_tailed",
    "push_student",
    "render_model_card",
    "save_student",
    "unwrap_timm",
    "write_report",
]

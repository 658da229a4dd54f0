"""Model architectures and loading. Importing this package registers the CIFAR models with timm."""

from . import cifar_mobilenet, cifar_resnet, cifar_shufflenet, cifar_vgg, cifar_wrn  # noqa: F401  (register)
from .hub_source import parse_hub_source, pin_hub_source
from .loading import check_teacher_matches, create_student, label_names_of, load_classifier, load_teacher, unwrap_timm

CIFAR_MODEL_NAMES = (
    "cifar_resnet8x4",
    "cifar_resnet32x4",
    "cifar_wrn_40_2",
    "cifar_wrn_40_1",
    "cifar_vgg8",
    "cifar_vgg13",
    "cifar_shufflenet_v1",
    "cifar_mobilenet_v2",
    "cifar_resnet50",
)

# The paper's seven CIFAR (teacher, student) pairs.
CIFAR_PAIRS = (
    ("cifar_resnet32x4", "cifar_resnet8x4"),
    ("cifar_vgg13", "cifar_vgg8"),
    ("cifar_wrn_40_2", "cifar_shufflenet_v1"),
    ("cifar_resnet50", "cifar_mobilenet_v2"),
    ("cifar_resnet32x4", "cifar_shufflenet_v1"),
    ("cifar_vgg13", "cifar_mobilenet_v2"),
    ("cifar_wrn_40_2", "cifar_wrn_40_1"),
)

__all__ = [
    "CIFAR_MODEL_NAMES",
    "CIFAR_PAIRS",
    "check_teacher_matches",
    "create_student",
    "label_names_of",
    "load_classifier",
    "load_teacher",
    "parse_hub_source",
    "pin_hub_source",
    "unwrap_timm",
]

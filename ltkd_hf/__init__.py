"""ltkd_hf: Long-Tailed Knowledge Distillation, Hugging Face-native.

Importing this package registers the paper's CIFAR architectures with timm.
"""

from . import models  # noqa: F401  (registers the CIFAR architectures with timm)
from .groups import ClassGroups

__version__ = "0.1.0"

__all__ = ["ClassGroups", "__version__"]

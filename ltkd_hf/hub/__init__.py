"""The student on disk and on the Hub: the canonical folder, the model card and the push.

One folder layout (``model.safetensors`` with timm key names + a ``config.json`` that timm and transformers
both accept) loads with ``timm.create_model("local-dir:<dir>", pretrained=True)``,
``transformers.AutoModelForImageClassification.from_pretrained(<dir>)`` and
``transformers.pipeline("image-classification", model=<dir>)``.
"""

from .card import render_model_card, write_model_card
from .push import check_push_to_hub_ready, push_student
from .save import load_student, save_student

__all__ = [
    "check_push_to_hub_ready",
    "load_student",
    "push_student",
    "render_model_card",
    "save_student",
    "write_model_card",
]

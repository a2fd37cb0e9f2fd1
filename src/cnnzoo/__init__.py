"""cnnzoo: the landmark CNN architectures of image classification, readable and measured."""

from cnnzoo import layers, models
from cnnzoo.models import create_model, from_timm, from_torchvision, list_models

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "from_timm",
    "from_torchvision",
    "layers",
    "list_models",
    "models",
]

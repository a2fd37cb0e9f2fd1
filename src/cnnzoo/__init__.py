"""cnnzoo: the landmark CNN architectures of image classification, readable and measured."""

from cnnzoo import layers, models, profile, train  # profile and train are callable packages
from cnnzoo._version import __version__
from cnnzoo.infer.backends import deploy
from cnnzoo.models import create_model, from_timm, from_torchvision, list_models
from cnnzoo.profile.receptive_field import receptive_field

__all__ = [
    "__version__",
    "create_model",
    "deploy",
    "from_timm",
    "from_torchvision",
    "layers",
    "list_models",
    "models",
    "profile",
    "receptive_field",
    "train",
]

"""Every architecture of the zoo; importing this package registers them (and builds nothing)."""

from cnnzoo.models import (  # noqa: F401  (imported to register their builders)
    alexnet,
    compact,
    deformable,
    densenet,
    efficientnet,
    googlenet,
    resnet,
    resnet_cifar,
    senet,
    vgg,
)
from cnnzoo.models.base import FeatureInfo, ZooModel
from cnnzoo.models.convert import from_timm, from_torchvision
from cnnzoo.models.features import FeatureExtractor
from cnnzoo.models.registry import create_model, list_models, register_model

__all__ = [
    "FeatureExtractor",
    "FeatureInfo",
    "ZooModel",
    "create_model",
    "from_timm",
    "from_torchvision",
    "list_models",
    "register_model",
]

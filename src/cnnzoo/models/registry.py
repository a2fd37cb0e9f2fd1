"""The model registry: one decorator, one dict, two lookups.

Builders are plain functions keyed by their own name. Every builder takes keyword-only
arguments, so `create_model` can reject a keyword the builder does not know by name
instead of letting it vanish into a `**kwargs`. A one-line builder, `def resnet50(**kw) ->
ResNet: return ResNet(*RESNET_LAYERS[50], **kw)`, takes the keyword-only parameters of the
class it returns (its family's options; what comes before the `*` is the architecture, which
the builder fixes): `register_model` gives it that signature, so `create_model`, `help()` and
`inspect.signature` all list them. `features_only` and `out_indices` work the
same for every model, so they live here, not in the builders, and so does `pretrained`: the
published weights of `cnnzoo.models.weights`, loaded by `cnnzoo.models.pretrained`.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import typing
from collections.abc import Callable, Sequence

from torch import nn

from cnnzoo.models.features import FeatureExtractor
from cnnzoo.models.pretrained import load_pretrained
from cnnzoo.models.weights import get_weights

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; a duplicate name is an error.

    A builder that takes `**kw` gets `family_signature(fn)` as its signature."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        fn.__signature__ = family_signature(fn)
    _REGISTRY[name] = fn
    return fn


def family_signature(fn: Callable[..., nn.Module]) -> inspect.Signature:
    """The signature of a `**kw` builder: its own keyword-only parameters, then the
    keyword-only parameters of the class its return annotation names (the family's options)."""
    cls = typing.get_type_hints(fn).get("return")
    if not isinstance(cls, type):
        raise TypeError(f"{fn.__name__}(**kw): a builder that passes keywords on must name the "
                        "class it returns in its return annotation")
    own = [p for p in inspect.signature(fn).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY]
    names = {p.name for p in own}
    options = [p for p in inspect.signature(cls).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names]
    return inspect.Signature(own + options, return_annotation=cls)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style `pattern`, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as `name`; an unknown name lists the closest known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(
            f"unknown model {name!r}{hint} (see cnnzoo.list_models())"
        ) from None


def create_model(name: str, *, pretrained: bool | str = False, num_classes: int = 1000,
                 in_chans: int = 3, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, **kwargs) -> nn.Module:
    """Build a registered model by name, or its backbone.

    Args:
        name: a name from `list_models()`.
        pretrained: True for the model's default published ImageNet-1k weights, or a tag
            (`"IMAGENET1K_V2"`, see `cnnzoo weights list`): downloaded once into the user
            cache, checked against the published SHA-256 prefix and loaded strictly. The
            weights need `num_classes=1000` (or `features_only`) and `in_chans=3`; their
            builder options (GoogLeNet's torchvision form) are set unless given.
        num_classes: size of the classifier output; 0 builds no classifier (the model then
            returns the classifier's input). Ignored with `features_only`.
        in_chans: channels of the input image (1 for Fashion-MNIST, 3 for RGB).
        features_only: return a `FeatureExtractor`: the stem and stages, whose forward gives
            a list of feature maps, one per selected stage, described by its `feature_info`.
            No classifier weights are built.
        out_indices: the stages to return, as indices into `feature_info` (None: all).
        **kwargs: keyword options of that model's builder (for a one-line builder, the
            keyword-only parameters of its family's class); an unknown one raises a TypeError
            that lists the accepted ones.
    """
    builder = get_builder(name)
    accepted = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in accepted:
            options = ", ".join(k for k in accepted if k not in ("num_classes", "in_chans"))
            raise TypeError(
                f"{name}() got an unexpected keyword argument {key!r}; it accepts: {options}"
            )
    if out_indices is not None and not features_only:
        raise ValueError(f"{name}: out_indices selects feature maps, expected features_only=True")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"{name}: expected num_classes as an int >= 0, got {num_classes!r}")
    entry = None
    if pretrained:
        entry = get_weights(name, pretrained)
        if in_chans != 3 or (num_classes != entry.num_classes and not features_only):
            raise ValueError(
                f"{name}: the {entry.tag} weights take 3 input channels and give "
                f"{entry.num_classes} classes, got in_chans={in_chans}, num_classes={num_classes} "
                "(for a new head, fine-tune: cnnzoo train MODEL --pretrained)"
            )
        kwargs = {**entry.options, **kwargs}
        num_classes = entry.num_classes  # features_only too: the file has the classifier
    elif features_only:
        num_classes = 0
    model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.name = name
    if entry is not None:
        load_pretrained(model, entry)
    if features_only:
        return FeatureExtractor(model, out_indices)
    return model

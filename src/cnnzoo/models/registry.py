"""The model registry: one decorator, one dict, two lookups.

Builders are plain functions keyed by their own name. Every builder takes keyword-only
arguments, so `create_model` can reject a keyword the builder does not know by name
instead of letting it vanish into a `**kwargs`.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model builder under its function name; a duplicate name is an error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


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


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: a name from `list_models()`.
        num_classes: size of the classifier output.
        in_chans: channels of the input image (1 for Fashion-MNIST, 3 for RGB).
        **kwargs: keyword options of that model's builder; an unknown one raises TypeError.
    """
    builder = get_builder(name)
    accepted = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in accepted:
            options = ", ".join(k for k in accepted if k not in ("num_classes", "in_chans"))
            raise TypeError(
                f"{name}() got an unexpected keyword argument {key!r}; it accepts: {options}"
            )
    model = builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.name = name
    return model

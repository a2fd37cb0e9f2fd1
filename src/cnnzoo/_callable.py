"""Packages that are also functions: `cnnzoo.train(...)` and `cnnzoo.profile(...)`.

The brief's API calls `cnnzoo.train(model, data, ...)` and `cnnzoo.profile(model, ...)`, and
the layout has packages of the same names. A plain function exported under the package's
name would shadow the package (`cnnzoo.train.checkpoint` becomes an AttributeError on a
function), so the package's module object is made callable instead.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable


def make_module_callable(module_name: str, fn: Callable) -> None:
    """Calling the module `module_name` calls `fn`; help() shows `fn`'s signature."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return fn(*args, **kwargs)

    CallableModule.__name__ = f"CallableModule[{fn.__name__}]"
    module.__class__ = CallableModule
    module.__signature__ = inspect.signature(fn)

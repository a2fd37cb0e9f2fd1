"""Training: config, optimizer groups, schedules, checkpoints, distributed setup, the loop.

`cnnzoo.train` is both this package and the function that trains a model: the package's
module object is callable, `cnnzoo.train(model, data, **options)` is
`cnnzoo.train.train(...)`. A plain function exported as `cnnzoo.train` would shadow the
package (then `cnnzoo.train.checkpoint` is an AttributeError on a function), and naming
the package otherwise would break the layout every other part of cnnzoo follows.
"""

from __future__ import annotations

import inspect
import sys
import types

from cnnzoo.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from cnnzoo.train.config import TrainConfig
from cnnzoo.train.loop import NonFiniteLossError, TrainResult, evaluate, train

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "train",
]


class _CallableModule(types.ModuleType):
    """This package's module type: calling it calls `train`."""

    def __call__(self, *args, **kwargs) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(train)  # so help() and IDEs show train's parameters

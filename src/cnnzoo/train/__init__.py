"""Training: config, optimizer groups, schedules, checkpoints, distributed setup, the loop.

`cnnzoo.train` is both this package and the function that trains a model: the package's
module object is callable, `cnnzoo.train(model, data, **options)` is
`cnnzoo.train.train(...)`. A plain function exported as `cnnzoo.train` would shadow the
package (then `cnnzoo.train.checkpoint` is an AttributeError on a function), and naming
the package otherwise would break the layout every other part of cnnzoo follows.
"""

from __future__ import annotations

from cnnzoo._callable import make_module_callable
from cnnzoo.checkpoint.torch_file import (
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


make_module_callable(__name__, train)

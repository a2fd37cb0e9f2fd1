"""Profiling: counts on the meta device, measured latency and memory, the comparison report.

The package is callable: `cnnzoo.profile(...)` is `profile(...)`.

`profile(model_or_name, input_shape)` returns a `ProfileReport`; `compare(models)` profiles
several models over several batch sizes and `write_comparison` turns that into CSV, JSON,
Markdown, HTML and plots. The method behind every figure is in docs/profile.md.
"""

from cnnzoo._callable import make_module_callable
from cnnzoo.profile.profiler import profile
from cnnzoo.profile.report import LayerRow, ProfileReport, TimingRow

__all__ = ["LayerRow", "ProfileReport", "TimingRow", "profile"]

# `cnnzoo.profile(model, ...)` calls `profile`, and `cnnzoo.profile.compare` stays a module.
make_module_callable(__name__, profile)

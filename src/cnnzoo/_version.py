"""The package version, in a leaf module: everything that records it imports it from here,
not from `cnnzoo` (whose `__init__` imports every part, so importing it back is a cycle)."""

__version__ = "0.1.0"

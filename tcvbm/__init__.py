"""tcvbm: time-correlated video bridge matching."""

__version__ = "0.1.0"

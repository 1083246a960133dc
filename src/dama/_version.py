"""The package version, in a leaf module: `dama hardness` and the CLI read it without importing the trainer."""

__version__ = "0.1.0"

"""The package version, in one place (checkpoints and exports record it)."""

__version__ = "0.1.0"

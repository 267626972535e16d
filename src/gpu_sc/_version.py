"""The package version, below every layer (provenance records it)."""

__version__ = "0.1.0"

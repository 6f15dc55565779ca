"""HOW archbench compares: the harness. It reaches models only through the `architectures` registry."""

__version__ = "0.1.0"

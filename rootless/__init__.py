"""rl: rootless containers centred on user namespaces."""

__version__ = "0.1.0"

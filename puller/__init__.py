"""The node-side client: fetches, verifies, stores and assembles images. Imports only `ocispec` and
the registry client `distclient` (through its front door); it works against any OCI registry.

The front door is the command line: `main` (the `puller` script, `python -m puller`)."""

from .cli import main

__all__ = ["main"]

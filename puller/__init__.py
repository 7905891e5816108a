"""The node-side client: fetches, verifies, stores and assembles images. Imports only `ocispec` and
the registry client `distclient` (through its front door); it works against any OCI registry."""

"""The node-side client: fetches, verifies, stores and assembles images. Imports only `ocispec`
(plus an HTTP client); it works against any OCI registry."""

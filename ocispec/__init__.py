"""The pure OCI model shared by the registry and the puller: digests, references, media types,
manifests, platforms and error codes. Standard library only; imports no other project code."""

"""The HTTP server: translates the OCI Distribution API and auth into storage calls and back."""

"""Where bytes live and when they become visible: storage drivers (fs, s3) and the
content-addressed stores above them. Imports only `ocispec` (and boto3 in the s3 driver)."""

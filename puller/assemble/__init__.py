"""Assembly: stored blobs → a root filesystem, a runtime bundle or an archive.

`unpack` (layers applied in order, safely), `layerstream` (decompressed, verified layer bytes under
a size budget), `tarsafe` and `confine` (tar entries applied only below the root, never through a
symlink), `runtimespec` (the OCI runtime config of a bundle), `export` (oci-archive,
docker-archive). Other puller modules import it only from here."""

from .export import FORMATS, export_image
from .runtimespec import ImageConfigError
from .unpack import image_config, unpack_image

__all__ = ["FORMATS", "ImageConfigError", "export_image", "image_config", "unpack_image"]

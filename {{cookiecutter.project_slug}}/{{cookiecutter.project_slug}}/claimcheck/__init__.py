"""Claim-check storage: large payloads are stored as blobs and travel as signed references."""

from .base import ClaimCheckTask, get_result, resolve_result
from .blobs import delete, open_blob, read_bytes, read_json, store_bytes, store_file, store_json, store_stream
from .references import Reference
from .uploads import complete_upload, create_upload, download_url

__all__ = [
    "ClaimCheckTask",
    "Reference",
    "complete_upload",
    "create_upload",
    "delete",
    "download_url",
    "get_result",
    "open_blob",
    "read_bytes",
    "read_json",
    "resolve_result",
    "store_bytes",
    "store_file",
    "store_json",
    "store_stream",
]

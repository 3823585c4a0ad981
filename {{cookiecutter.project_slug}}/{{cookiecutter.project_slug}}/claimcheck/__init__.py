"""Claim-check storage: large payloads are stored as blobs and travel as signed references."""

from .base import ClaimCheckTask, resolve_result, wait_for_result
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
    "open_blob",
    "read_bytes",
    "read_json",
    "resolve_result",
    "store_bytes",
    "store_file",
    "store_json",
    "store_stream",
    "wait_for_result",
]

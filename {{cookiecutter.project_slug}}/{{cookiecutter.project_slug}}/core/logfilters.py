"""Logging filters that drop known, harmless messages by their exact start, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Iterable


class DropMessages(logging.Filter):
    """Drop the records whose message starts with one of ``prefixes``; pass every other record."""

    def __init__(self, prefixes: Iterable[str]) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)
        if not self.prefixes or not all(self.prefixes):
            raise ValueError(f"DropMessages needs non-empty message prefixes, got {list(self.prefixes)!r}")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)

"""System checks: claim-check settings that must agree with each other."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register


@register()
def check_claimcheck_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Refuse a broker cap that inline argument sets could hit; warn when results are swept while still kept."""
    messages: list[CheckMessage] = []
    threshold, cap = settings.CLAIMCHECK_ARGS_THRESHOLD, settings.CLAIMCHECK_MESSAGE_MAX_BYTES
    if cap <= threshold:
        messages.append(
            Error(
                f"CLAIMCHECK_MESSAGE_MAX_BYTES ({cap}) must be larger than CLAIMCHECK_ARGS_THRESHOLD ({threshold}): "
                "argument sets just under the threshold travel inline and would be refused at publish.",
                id="claimcheck.E001",
            )
        )
    ttl = settings.CLAIMCHECK_ORPHAN_TTL
    for name in ("CELERY_RESULT_EXPIRES", "IDEMPOTENCY_RETENTION"):
        kept = getattr(settings, name, None) or 0
        if ttl < kept:
            messages.append(
                Warning(
                    f"CLAIMCHECK_ORPHAN_TTL ({ttl} s) is shorter than {name} ({kept} s): offloaded results "
                    "would be swept while stored results still point at them.",
                    id="claimcheck.W001",
                )
            )
    return messages

"""Collect predictions whose terminal webhook never arrived.

Replicate retries only the terminal webhook, for about a minute; if the receiver was down for
longer, the result is only in Replicate's API, and only for an hour. Predictions still open after
RECEIVER_RECONCILE_AFTER_SECONDS are fetched and applied like a delivery.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from receiver import rules
from receiver.settings import Settings
from receiver.store import Store

log = logging.getLogger("receiver")
RETENTION_SECONDS = 3600  # Replicate deletes API predictions an hour after they complete
BATCH = 20
# What a Replicate prediction id looks like (theirs are lowercase letters and digits). An id
# came from whoever signed the delivery; one with `/`, `?`, `%` or dots would take the API
# token to another path. Others (a bare Cog server's) are not in Replicate's API anyway.
REPLICATE_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


class Reconciler:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        fetch: Callable[[str], dict[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.fetch = fetch
        self.clock = clock

    def step(self) -> bool:
        now = self.clock()
        stale = self.store.stale(
            updated_before=now - self.settings.receiver_reconcile_after_seconds,
            created_after=now - 2 * RETENTION_SECONDS,
            limit=BATCH,
        )
        for prediction_id in stale:
            self._reconcile(prediction_id)
            self.store.mark_reconciled(prediction_id, self.clock())
        return False  # one batch per interval: the API has rate limits

    def _reconcile(self, prediction_id: str) -> None:
        """Fetch one prediction and apply it like a delivery; any failure is logged, and the
        prediction waits for the next interval (one failed lookup must not stop the others)."""
        if not REPLICATE_ID.fullmatch(prediction_id):
            log.warning("reconcile: %r is not a Replicate prediction id, skipped", prediction_id)
            return
        try:
            body = self.fetch(prediction_id)
        except Exception as exc:
            log.warning("reconcile %s: %s", prediction_id, exc)
            return
        if body.get("id") == prediction_id and rules.problem(body) is None:
            status = str(body.get("status", ""))
            webhook_id = f"reconcile:{status}:{prediction_id}"[:255]
            self.store.record(webhook_id, body, self.clock(), source="reconcile")

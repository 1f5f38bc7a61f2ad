"""Replicate's limit on prediction creation (600 a minute per account), shared by every
receiver process on one database: a token bucket kept in one `rate_limits` row.

A bucket of `burst` tokens refilled at r a second lets through at most burst + 60 r in any
minute, so r is (limit - burst) / 60: never over the limit in any window, not only on average.
A 429 blocks the bucket until the reset Replicate names; from then on, one call and the steady
rate (no burst: Replicate has just said the account is at its limit).
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from receiver.tables import dialect_insert, rate_limits

BURST = 10


class SharedRateLimit:
    def __init__(self, engine: Engine, name: str, per_minute: int, burst: int = BURST) -> None:
        if per_minute <= burst:
            raise ValueError(
                f"a limit of {per_minute} a minute leaves no room for a burst of {burst}"
            )
        self.engine = engine
        self.name = name
        self.burst = burst
        self.per_second = (per_minute - burst) / 60
        self._insert = dialect_insert(engine)(rate_limits).on_conflict_do_nothing()
        self._locked = select(rate_limits).where(rate_limits.c.name == name)
        if engine.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE locks already
            self._locked = self._locked.with_for_update()

    def take(self, now: float) -> float:
        """Take one token: 0.0 if granted, else the seconds until one may be."""
        with self.engine.begin() as conn:
            row = conn.execute(self._locked).first()
            if row is None:  # the first use anywhere: a full bucket
                values = {"name": self.name, "tokens": self.burst, "updated_at": now}
                conn.execute(self._insert, {**values, "blocked_until": 0.0})
                row = conn.execute(self._locked).one()
            if now < row.blocked_until:
                return float(row.blocked_until) - now
            elapsed = max(0.0, now - row.updated_at)
            tokens = min(float(self.burst), row.tokens + elapsed * self.per_second)
            granted = tokens >= 1
            if granted:
                tokens -= 1
            conn.execute(
                update(rate_limits)
                .where(rate_limits.c.name == self.name)
                .values(tokens=tokens, updated_at=max(now, row.updated_at))
            )
        return 0.0 if granted else (1 - tokens) / self.per_second

    def block(self, until: float, now: float) -> None:
        """Replicate said 429: nobody creates until `until`, then one call and the steady rate."""
        with self.engine.begin() as conn:
            row = conn.execute(self._locked).one()  # made by the take() before every create
            conn.execute(
                update(rate_limits)
                .where(rate_limits.c.name == self.name)
                .values(
                    tokens=1.0,  # counted from `until`: one call then
                    updated_at=max(until, now),
                    blocked_until=max(until, row.blocked_until),
                )
            )

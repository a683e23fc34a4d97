"""Pure reads of a hub state for the operation commands: removed ids, publish times, client activity."""

from __future__ import annotations

import posixpath
from datetime import datetime, timezone
from typing import Any

from ..ledger.status import DAY_S, HOUR_S, ClientActivity
from ..publish import layout
from .hub_state import BATCH, LEDGER, HubState

REMOVE_STAGE = "remove"  # a removal is recorded as a permanent failure of this stage and reason
REMOVED_REASON = "removed"


def excluded_ids(state: HubState) -> frozenset[str]:
    """Ids some removal record of the ledger (compacted or not) excludes."""
    out: set[str] = set()
    for path in state.paths_of(LEDGER, BATCH):
        for f in state.parsed[path].failures:
            if f.get("stage") == REMOVE_STAGE and f.get("reason") == REMOVED_REASON:
                out.add(str(f["item_id"]))
    return frozenset(out)


def shard_time(path: str) -> float | None:
    """When a shard was published, from its name (``<stem>-shard-<yyyymmddThhmmss>-...``)."""
    rest = posixpath.basename(path).split(layout.SHARD_MARK, 1)[-1]
    try:
        stamp = datetime.strptime(rest.split("-", 1)[0], "%Y%m%dT%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def client_activity(records: list[tuple[float | None, str, str, float | None]], done: list[tuple[str, float | None]],
              now: float) -> tuple[ClientActivity, ...]:
    """Per client: rows published (with times where known), when the first item of each window was
    made (the start of the client's actual window, for its rates) and units marked done."""
    stats: dict[str, dict[str, Any]] = {}

    def blank() -> dict[str, Any]:
        return {"published": 0, "hour": 0, "day": 0, "last": None, "units": 0, "first_hour": None, "first_day": None}

    for t, client, _, made in records:
        s = stats.setdefault(client, blank())
        s["published"] += 1
        if t is not None:
            for window, count, first in ((HOUR_S, "hour", "first_hour"), (DAY_S, "day", "first_day")):
                if t >= now - window:
                    s[count] += 1
                    if made is not None:
                        s[first] = made if s[first] is None else min(s[first], made)
            s["last"] = t if s["last"] is None else max(s["last"], t)
    for client, _ in done:
        stats.setdefault(client, blank())["units"] += 1
    return tuple(ClientActivity(client=c, published=s["published"], published_last_hour=s["hour"],
                                published_last_day=s["day"], units_done=s["units"], last_publish_at=s["last"],
                                first_item_last_hour=s["first_hour"], first_item_last_day=s["first_day"])
                 for c, s in sorted(stats.items()))

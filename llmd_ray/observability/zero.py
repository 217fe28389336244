"""Counters exported at 0 before their first event (what prometheus-client does for labelled
counters one declares), so a dashboard or an alert on a rare event (a shed, a fallback) has a
series to read from the start. Ray's ``Counter.inc`` refuses 0; its ``_record`` takes it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger("ray.serve")


def declare(counter: Any, tag_sets: Iterable[Mapping[str, str]]) -> None:
    for tags in tag_sets:
        try:
            counter._record(0, tags=dict(tags))
        except Exception:  # metrics are best effort: never fail a replica for one
            logger.debug("cannot declare %s at 0", getattr(counter, "_name", counter), exc_info=True)
            return

"""kubetrain_operator.constants: the RFC 3339 form of every time the operator writes."""

from __future__ import annotations

import datetime as dt
import re

from kubetrain_operator.constants import rfc3339


def test_rfc3339_is_utc_with_a_z() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1767323045.6789) == "2026-01-02T03:04:05Z"
    assert rfc3339(1767323045.6789, millis=True) == "2026-01-02T03:04:05.678Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert rfc3339(dt.datetime(2026, 1, 2, 5, 4, 5, tzinfo=plus_two)) == "2026-01-02T03:04:05Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rfc3339())

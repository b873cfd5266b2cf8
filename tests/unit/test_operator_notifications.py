"""operator notifications.py: MinIO notification lines -> changes, bad lines named."""

from __future__ import annotations

import pytest
from kubetrain_operator.notifications import NotificationError, parse_line


def test_notification_lines() -> None:
    line = (
        '{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"7/a b.png",'
        '"eTag":"\\"abc\\""}}},{"eventName":"s3:ObjectRemoved:Delete","s3":{"object":{"key":"7/x.png"}}},'
        '{"eventName":"s3:ObjectAccessed:Get","s3":{"object":{"key":"7/y.png"}}}]}'
    )
    changes = parse_line(line)
    assert [(c.kind, c.key, c.etag) for c in changes] == [
        ("put", "7/a b.png", "abc"),
        ("delete", "7/x.png", ""),
    ]
    assert parse_line('{"Records":null}') == []
    assert parse_line("   ") == []
    escaped = parse_line(
        '{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"7/a+b%21.png","eTag":"e"}}}]}',
        escaped=True,
    )
    assert escaped[0].key == "7/a b!.png"
    with pytest.raises(NotificationError):
        parse_line("{not json")

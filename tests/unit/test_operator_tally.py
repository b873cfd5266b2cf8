"""Change semantics of the tally: diff against the baseline, never a notification count."""

from __future__ import annotations

import hashlib
import random

import kubetrain_contract as contract
import pytest
from kubetrain_operator.tally import ListingOrderError, Tally, decode_etag, encode_etag


def etag(data: str) -> str:
    return hashlib.md5(data.encode()).hexdigest()


def counts(t: Tally, label: str) -> tuple[int, int, int, int]:
    c = t.counts().get(label)
    return (0, 0, 0, 0) if c is None else (c.objects, c.added, c.modified, c.deleted)


@pytest.mark.parametrize(
    "raw",
    [
        etag("x"),
        f'"{etag("x")}"',
        etag("x").upper(),
        "0123456789abcdef0123456789abcdef-3",
        "abcdefghijklmno",  # 15 chars -> 16 bytes with the marker: must not look like MD5
        "a",
        "",
    ],
)
def test_etag_codec_roundtrip(raw: str) -> None:
    bare = contract.normalize_etag(raw)
    assert decode_etag(encode_etag(raw)) == (bare.lower() if len(bare) == 32 else bare)


def test_md5_etag_is_16_raw_bytes() -> None:
    assert len(encode_etag(etag("x"))) == 16
    assert len(encode_etag("abcdefghijklmno")) != 16


def test_split_follows_contract_label_of_and_include() -> None:
    t = Tally("data", "*.png")
    for key in [
        "data/7/a.png",
        "data/7/sub/b.png",
        "data/a.png",
        "other/7/a.png",
        "data/.kubetrain/x/y.png",
        "data//a.png",
        "data/7/a.jpg",
    ]:
        parts = t.split(key)
        label = contract.label_of(key, "data")
        if key.endswith(".jpg"):
            assert parts is None
        elif label is None:
            assert parts is None, key
        else:
            assert parts is not None and parts[0] == label, key
            assert t.join(*parts) == key


def test_empty_prefix_and_reserved_keys() -> None:
    t = Tally("", "*")
    assert t.split(".kubetrain/snapshots/ns-w/abc.json") is None
    assert t.split("3/x.png") == ("3", "x.png")
    assert t.split("toplevel.png") is None


def test_add_modify_delete_each_count_one() -> None:
    t = Tally("", "*.png")
    t.set_baseline({"1/a.png": etag("a"), "1/b.png": etag("b")})
    assert counts(t, "1") == (0, 0, 0, 2)  # nothing live yet: both baseline keys deleted
    t.put("1/a.png", etag("a"))
    t.put("1/b.png", etag("b"))
    assert counts(t, "1") == (2, 0, 0, 0)
    assert t.put("1/c.png", etag("c"))  # added
    assert t.put("1/a.png", etag("a2"))  # modified
    assert t.delete("1/b.png")  # deleted
    assert counts(t, "1") == (2, 1, 1, 1)
    assert t.changes() == {"1": 3}


def test_add_then_delete_nets_zero_and_overwrite_twice_counts_one() -> None:
    t = Tally("", "*")
    t.set_baseline({"5/keep": etag("k")})
    t.put("5/keep", etag("k"))
    t.put("5/tmp", etag("t"))
    t.delete("5/tmp")
    assert t.changes() == {}
    t.put("5/keep", etag("v2"))
    t.put("5/keep", etag("v3"))
    assert t.changes() == {"5": 1}
    t.put("5/keep", etag("k"))  # back to the trained bytes: no change at all
    assert t.changes() == {}
    assert counts(t, "5") == (1, 0, 0, 0)


def test_identical_reupload_and_duplicate_events_are_no_ops() -> None:
    t = Tally("", "*")
    t.set_baseline({"0/x": etag("x")})
    t.put("0/x", etag("x"))
    assert not t.put("0/x", etag("x"))
    t.put("0/y", etag("y"))
    assert not t.put("0/y", etag("y"))  # duplicated notification
    assert t.delete("0/x")
    assert not t.delete("0/x")  # duplicated delete
    assert not t.delete("0/never")
    assert t.changes() == {"0": 2}


def test_delete_of_baseline_key_then_readd_with_same_etag_is_zero() -> None:
    t = Tally("", "*")
    t.set_baseline({"2/x": etag("x")})
    t.put("2/x", etag("x"))
    t.delete("2/x")
    assert t.changes() == {"2": 1}
    t.put("2/x", etag("x"))
    assert t.changes() == {}


def test_set_baseline_keeps_live_and_rediffs() -> None:
    t = Tally("", "*")
    for i in range(10):
        t.put(f"a/{i}", etag(str(i)))
    assert t.changes() == {"a": 10}  # no baseline: everything is added
    t.set_baseline(t.live_snapshot())
    assert t.changes() == {}
    t.put("a/0", etag("new"))
    t.put("a/99", etag("99"))
    t.set_baseline({f"a/{i}": etag(str(i)) for i in range(5)})  # an older, smaller baseline
    # live: 0(modified) 1..4 same, 5..9 + 99 added
    c = t.counts()["a"]
    assert (c.objects, c.added, c.modified, c.deleted) == (11, 6, 1, 0)


def test_resync_repairs_missed_events_idempotently() -> None:
    t = Tally("p/", "*")
    truth = {f"p/{lab}/{i:03d}": etag(f"{lab}{i}") for lab in "abc" for i in range(50)}
    t.set_baseline(truth)
    # The operator saw some events, missed others, and has ghosts.
    t.put("p/a/ghost", etag("g"))
    t.put("p/zz/ghost", etag("g"))
    for key, value in list(truth.items())[:40]:
        t.put(key, value)
    live = dict(truth)
    live["p/b/007"] = etag("changed")
    del live["p/c/010"]
    live["p/d/000"] = etag("new label")
    session = t.resync()
    for key in sorted(live):
        session.feed(key, live[key])
    result = session.finish()
    assert result.listed == len(live)
    assert t.live_snapshot() == live
    assert t.changes() == {"b": 1, "c": 1, "d": 1}
    # A second identical listing changes nothing.
    session = t.resync()
    for key in sorted(live):
        session.feed(key, live[key])
    assert session.finish().changed == 0


def test_streaming_resync_rejects_unsorted_listing_and_nonstreaming_accepts_it() -> None:
    t = Tally("", "*")
    keys = [f"{lab}/{i}" for lab in "ab" for i in range(3)]
    session = t.resync()
    session.feed(keys[3], etag("x"))
    with pytest.raises(ListingOrderError):
        session.feed(keys[0], etag("x"))
    t2 = Tally("", "*")
    session = t2.resync(streaming=False)
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    for key in shuffled:
        session.feed(key, etag(key))
    session.finish()
    assert set(t2.live_snapshot()) == set(keys)


def test_random_operations_match_a_reference_diff() -> None:
    """Property check against the definition: changes = |{k: base[k] != live[k]}| per label."""
    rng = random.Random(7)
    base = {f"{rng.choice('xyz')}/{i}": etag(str(i)) for i in range(200)}
    t = Tally("", "*")
    t.set_baseline(base)
    live = dict(base)
    for key, value in live.items():
        t.put(key, value)
    keys = list(base) + [f"{rng.choice('xyzw')}/n{i}" for i in range(100)]
    for _ in range(3000):
        key = rng.choice(keys)
        if rng.random() < 0.4:
            t.delete(key)
            live.pop(key, None)
        else:
            value = etag(str(rng.randint(0, 3))) if rng.random() < 0.5 else base.get(key, etag("b"))
            t.put(key, value)
            live[key] = value
    expected: dict[str, int] = {}
    for key in set(base) | set(live):
        if base.get(key) != live.get(key):
            label = key.split("/")[0]
            expected[label] = expected.get(label, 0) + 1
    assert t.changes() == expected
    assert t.live_objects() == len(live)
    assert t.live_snapshot() == live

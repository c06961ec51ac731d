"""shared/catalog/idempotency.py and etags.py on SQLite and PostgreSQL: keys kept 24 h, then
renewed or purged; bodies compared as JSON; If-Match parsed as RFC 9110 says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import idempotency
from shared.catalog.etags import matches
from shared.catalog.idempotency import Answer, Claim
from shared.db.idempotency import IdempotencyKey
from shared.errors import Invalid

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_keys_are_kept_a_day_then_renewed_or_purged(sessions: sessionmaker[Session]) -> None:
    done: list[int] = []

    def work(n: int) -> Answer:
        done.append(n)
        return Answer(202, {"n": n}, f"/x/{n}")

    claim = Claim("alice", "POST /x", "k", idempotency.body_hash(b'{"a": 1, "b": 2}'))
    assert idempotency.once(sessions, claim, lambda s: work(1), T0) == Answer(202, {"n": 1}, "/x/1")
    same = Claim("alice", "POST /x", "k", idempotency.body_hash(b'{"b":2,"a":1}'))
    again = idempotency.once(sessions, same, lambda s: work(2), T0 + timedelta(hours=23))
    assert again == Answer(202, {"n": 1}, "/x/1", replayed=True) and done == [1]
    other = Claim("alice", "POST /x", "k", idempotency.body_hash(b"{}"))
    with pytest.raises(Invalid, match="Idempotency-Key: was used at 2026-12-06T09:00:00Z with another body"):
        idempotency.once(sessions, other, lambda s: work(3), T0)
    later = idempotency.once(sessions, other, lambda s: work(4), T0 + timedelta(hours=25))
    assert later == Answer(202, {"n": 4}, "/x/4") and done == [1, 4]
    bob = Claim("bob", "POST /x", "k", claim.body_sha256)
    assert idempotency.once(sessions, bob, lambda s: work(5), T0).body == {"n": 5}

    assert idempotency.purge(sessions, T0 + timedelta(hours=26)) == 1  # bob's, not the renewed one
    with sessions() as s:
        assert [(r.caller, r.body) for r in s.scalars(select(IdempotencyKey))] == [("alice", {"n": 4})]


def test_keys_and_if_match_headers_are_checked() -> None:
    assert idempotency.check_key("a b~!") == "a b~!"
    for bad, why in (("", "is empty"), ("é", "holds 'é'"), ("x" * 256, "is 256 characters long")):
        with pytest.raises(Invalid, match=f"^Idempotency-Key: {why}"):
            idempotency.check_key(bad)
    assert idempotency.body_hash(b"") != idempotency.body_hash(b"{}")
    assert idempotency.body_hash(b"not json") == idempotency.body_hash(b"not json")
    assert matches("*", '"a"') and matches('"b", "a"', '"a"') and not matches('W/"a"', '"a"')
    assert not matches('"b"', '"a"')
    for bad in ("a", '"a', '"a"b"', ""):
        with pytest.raises(Invalid, match=r"^If-Match: "):
            matches(bad, '"a"')

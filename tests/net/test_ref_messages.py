"""Cluster-reference messages on the wire: round trips, bounds, and every kind of bad field."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioblock._net.codec import (
    MAX_AUTHENTICATED_MESSAGE_SIZE,
    MAX_MESSAGE_SIZE,
    FrameCodec,
    decode_message,
    encode_message,
)
from trioblock._net.messages import (
    Message,
    RefCollect,
    RefDigests,
    RefDigestsReply,
    RefEntries,
    RefFetch,
    RefTuple,
    RefUpdate,
    checked,
    message_from_map,
    message_to_map,
)
from trioblock.errors import ProtocolError

H = bytes(range(32))

ref_entries: st.SearchStrategy[RefTuple] = st.tuples(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=1, max_size=128),
    st.booleans(),
    st.integers(min_value=0, max_value=2**63 - 1),
)
prefixes = st.binary(max_size=4)

ref_messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(RefUpdate, st.lists(ref_entries, min_size=1, max_size=20)),
    st.builds(RefCollect, st.lists(ref_entries, min_size=1, max_size=20)),
    st.builds(RefDigests, st.lists(prefixes, min_size=1, max_size=20)),
    st.builds(
        RefDigestsReply,
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=2**63 - 1), st.binary(min_size=32, max_size=32)
            ),
            max_size=20,
        ),
    ),
    st.builds(
        RefFetch,
        prefixes,
        st.binary(max_size=160),
        st.integers(min_value=1, max_value=4096),
    ),
    st.builds(RefEntries, st.lists(ref_entries, max_size=20), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(message=ref_messages)
def test_ref_messages_round_trip(message: Message) -> None:
    assert decode_message(encode_message(message)) == message
    assert checked(message) is message


def test_ref_update_accepts_the_single_form_and_sends_the_list_form() -> None:
    single = {"type": "RefUpdate", "hash": H, "owner": b"v1", "deleted": True, "ts": 7}
    message = decode_message(cbor2.dumps(single))
    assert message == RefUpdate([(H, b"v1", True, 7)])
    assert message_to_map(message) == {"type": "RefUpdate", "entries": [[H, b"v1", True, 7]]}


def entry(**change: Any) -> list[Any]:
    fields = {"hash": H, "owner": b"o", "deleted": False, "ts": 1, **change}
    return [fields["hash"], fields["owner"], fields["deleted"], fields["ts"]]


GOOD: dict[str, dict[str, Any]] = {
    "RefUpdate": {"entries": [entry()]},
    "RefCollect": {"entries": [entry()]},
    "RefDigests": {"prefixes": [b""]},
    "RefDigestsReply": {"digests": [[0, H]]},
    "RefFetch": {"prefix": b"\x01", "after": b"", "limit": 10},
    "RefEntries": {"entries": [], "more": False},
}

BAD_ENTRIES = [
    entry(hash=H[:31]),
    entry(hash=H + b"x"),
    entry(hash="x" * 32),
    entry(owner=b""),
    entry(owner=b"o" * 129),
    entry(owner="text"),
    entry(deleted=0),
    entry(deleted=None),
    entry(ts=-1),
    entry(ts=2**63),
    entry(ts=True),
    entry(ts=1.0),
    entry()[:3],
    [*entry(), 5],
    {"hash": H},
    b"entry",
]

BAD: list[tuple[str, dict[str, Any]]] = [
    *[("RefUpdate", {"entries": [bad]}) for bad in BAD_ENTRIES],
    *[("RefCollect", {"entries": [entry(), bad]}) for bad in BAD_ENTRIES],
    *[("RefEntries", {"entries": [bad], "more": True}) for bad in BAD_ENTRIES],
    ("RefUpdate", {"entries": []}),
    ("RefUpdate", {"entries": [entry()] * 4097}),
    ("RefUpdate", {"entries": entry()}),
    ("RefUpdate", {}),
    ("RefUpdate", {"hash": H, "owner": b"o", "deleted": False}),
    ("RefUpdate", {"hash": H, "owner": b"", "deleted": False, "ts": 1}),
    ("RefCollect", {"entries": []}),
    ("RefCollect", {"hash": H, "owner": b"o", "deleted": True, "ts": 1}),
    ("RefDigests", {"prefixes": []}),
    ("RefDigests", {"prefixes": [b""] * 257}),
    ("RefDigests", {"prefixes": [b"12345"]}),
    ("RefDigests", {"prefixes": ["ab"]}),
    ("RefDigests", {"prefixes": b"ab"}),
    ("RefDigestsReply", {"digests": [[0, H]] * 257}),
    ("RefDigestsReply", {"digests": [[-1, H]]}),
    ("RefDigestsReply", {"digests": [[False, H]]}),
    ("RefDigestsReply", {"digests": [[0, H[:31]]]}),
    ("RefDigestsReply", {"digests": [[0]]}),
    ("RefDigestsReply", {"digests": [0, H]}),
    ("RefFetch", {"prefix": b"12345", "after": b"", "limit": 1}),
    ("RefFetch", {"prefix": "", "after": b"", "limit": 1}),
    ("RefFetch", {"prefix": b"", "after": b"a" * 161, "limit": 1}),
    ("RefFetch", {"prefix": b"", "after": None, "limit": 1}),
    ("RefFetch", {"prefix": b"", "after": b"", "limit": 0}),
    ("RefFetch", {"prefix": b"", "after": b"", "limit": 4097}),
    ("RefFetch", {"prefix": b"", "after": b"", "limit": True}),
    ("RefFetch", {"prefix": b"", "limit": 1}),
    ("RefEntries", {"entries": [entry()] * 4097, "more": False}),
    ("RefEntries", {"entries": [], "more": 1}),
    ("RefEntries", {"entries": []}),
]


@pytest.mark.parametrize(("kind", "fields"), GOOD.items())
def test_well_formed_maps_are_accepted(kind: str, fields: dict[str, Any]) -> None:
    message = decode_message(cbor2.dumps({"type": kind, **fields}))
    assert type(message).__name__ == kind


@pytest.mark.parametrize(("kind", "fields"), BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD)])
def test_malformed_fields_raise_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_message(cbor2.dumps({"type": kind, **fields}))


def test_upper_bounds_are_accepted() -> None:
    big = [entry(owner=b"o" * 128, ts=2**63 - 1)] * 4096
    assert len(message_from_map({"type": "RefUpdate", "entries": big}).entries) == 4096  # type: ignore[union-attr]
    prefixes_ok = {"type": "RefDigests", "prefixes": [b"\xff" * 4] * 256}
    assert len(message_from_map(prefixes_ok).prefixes) == 256  # type: ignore[union-attr]
    fetch = {"type": "RefFetch", "prefix": b"abcd", "after": b"k" * 160, "limit": 4096}
    assert message_from_map(fetch) == RefFetch(b"abcd", b"k" * 160, 4096)


def test_the_largest_ref_message_fits_an_authenticated_frame_only() -> None:
    largest = RefUpdate([(H, b"o" * 128, True, 2**63 - 1)] * 4096)
    size = len(encode_message(largest))
    assert MAX_MESSAGE_SIZE < size <= MAX_AUTHENTICATED_MESSAGE_SIZE
    codec = FrameCodec(max_message_size=MAX_AUTHENTICATED_MESSAGE_SIZE)
    codec.receive_data(codec.send_message(largest))
    assert codec.next_event() == largest


_ANY_FIELD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
    st.binary(max_size=40),
    st.text(max_size=5),
    st.lists(st.one_of(st.binary(max_size=33), st.integers(), st.booleans()), max_size=5),
    st.lists(
        st.lists(st.one_of(st.binary(max_size=33), st.integers(), st.booleans()), max_size=5),
        max_size=3,
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(sorted(GOOD)),
    key=st.sampled_from(
        ["entries", "prefixes", "digests", "prefix", "after", "limit", "more", "hash", "owner"]
    ),
    value=_ANY_FIELD,
)
def test_any_field_value_gives_a_valid_message_or_protocol_error(
    kind: str, key: str, value: Any
) -> None:
    try:
        message = decode_message(cbor2.dumps({"type": kind, **GOOD[kind], key: value}))
    except ProtocolError:
        return
    # Whatever was accepted is a message a peer accepts, and re-encodes to itself.
    assert decode_message(encode_message(checked(message))) == message


@pytest.mark.parametrize(
    "message",
    [
        RefUpdate([]),
        RefUpdate([(H, b"", False, 0)]),
        RefUpdate([(32, b"o", False, 0)]),  # type: ignore[list-item]
        RefCollect([(H, b"o", False, -1)]),
        RefDigests([b"12345"]),
        RefFetch(b"", b"", 0),
    ],
)
def test_checked_turns_what_a_peer_would_refuse_into_value_error(message: Message) -> None:
    with pytest.raises(ValueError):
        checked(message)

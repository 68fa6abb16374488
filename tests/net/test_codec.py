"""The sans-IO wire codec: round trips, arbitrary splits, and every kind of bad input."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trioblock._core.block import BlockHeader
from trioblock._core.hashing import Hash
from trioblock._net.codec import (
    MAX_CHUNK_SIZE,
    MAX_MESSAGE_SIZE,
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    Event,
    FrameCodec,
    FrameKind,
    NeedData,
    decode_message,
)
from trioblock._net.messages import (
    PROTOCOL_VERSION,
    Admin,
    AdminReply,
    Auth,
    Error,
    GetBlock,
    Hello,
    Message,
    NeedBlockQuery,
    NeedBlockReply,
    Ok,
    PutBlock,
    has_body,
)
from trioblock.errors import ProtocolError

from .test_ref_messages import ref_messages

H = Hash(bytes(range(32)))

# -- strategies ---------------------------------------------------------------------------

hashes = st.binary(min_size=32, max_size=32).map(Hash)
node_ids = st.text(min_size=1, max_size=64)
plain_data: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
opaque_maps = st.dictionaries(st.text(max_size=8), plain_data, max_size=4)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        st.integers(min_value=0, max_value=2**32),
        node_ids,
        st.binary(min_size=32, max_size=32),
    ),
    st.builds(Auth, st.binary(min_size=32, max_size=32)),
    st.builds(
        GetBlock,
        hashes,
        st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    ),
    st.builds(PutBlock, hashes, st.sampled_from(BlockHeader)),
    st.builds(NeedBlockQuery, hashes),
    st.builds(NeedBlockReply, st.booleans()),
    st.just(Ok()),
    st.builds(
        Error,
        st.sampled_from(["missing", "corrupt", "refused", "internal", "protocol", "busy"]),
        st.text(max_size=50),
    ),
    st.builds(Admin, opaque_maps),
    st.builds(AdminReply, opaque_maps),
    ref_messages,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return [p for p in pieces if p]


def feed_all(codec: FrameCodec, pieces: list[bytes], *, eof: bool = True) -> list[Event]:
    events: list[Event] = []
    for piece in [*pieces, b""] if eof else pieces:
        codec.receive_data(piece)
        while True:
            event = codec.next_event()
            if isinstance(event, NeedData):
                break
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    return events


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload), kind) + payload


def message_frame(value: Any) -> bytes:
    return frame(FrameKind.MESSAGE, cbor2.dumps(value))


def decode_only(data: bytes, **limits: int) -> list[Event]:
    return feed_all(FrameCodec(**limits), [data])


# -- round trips ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    conversation=st.lists(
        st.tuples(messages, st.lists(st.binary(max_size=300), max_size=3)), max_size=6
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_every_message_round_trips_through_arbitrary_splits(
    conversation: list[tuple[Message, list[bytes]]], cuts: list[int]
) -> None:
    sender = FrameCodec()
    wire = b""
    expected: list[Event] = []
    for message, chunks in conversation:
        wire += sender.send_message(message)
        expected.append(message)
        if has_body(message):
            for chunk in chunks:
                wire += sender.send_body_chunk(chunk)
                expected.append(BodyChunk(chunk))
            wire += sender.send_body_end()
            expected.append(BodyEnd())
    events = feed_all(FrameCodec(), split(wire, cuts))
    assert events == [*expected, ConnectionClosed()]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0), max_size=10))
@example(data=b"\x00\x00\x00\x01\x01\xa0", cuts=[])
@example(data=b"\x00\x00\x00\x00\x02", cuts=[])
def test_arbitrary_bytes_give_events_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    codec = FrameCodec(max_body_size=1000)
    try:
        events = feed_all(codec, split(data, cuts))
    except ProtocolError:
        assert codec.failed
        with pytest.raises(ProtocolError):
            codec.next_event()
        return
    for event in events:
        assert isinstance(event, Message | BodyChunk | BodyEnd | ConnectionClosed)


@settings(max_examples=150, deadline=None)
@given(
    value=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "hash",
                "header",
                "needed",
                "kind",
                "message",
                "request",
                "reply",
                "order_tag",
                "version",
                "node_id",
                "nonce",
                "proof",
            ]
        ),
        st.one_of(
            plain_data,
            st.sampled_from(
                [
                    "GetBlock",
                    "PutBlock",
                    "NeedBlockQuery",
                    "NeedBlockReply",
                    "Ok",
                    "Error",
                    "Admin",
                    "AdminReply",
                    "Hello",
                    "Auth",
                    "plain",
                ]
            ),
            st.binary(min_size=31, max_size=33),
        ),
    )
)
def test_arbitrary_maps_give_a_valid_message_or_protocol_error(value: dict[str, Any]) -> None:
    try:
        message = decode_message(cbor2.dumps(value))
    except ProtocolError:
        return
    # Whatever was accepted re-encodes to an equivalent message.
    assert decode_message(FrameCodec().send_message(message)[5:]) == message


# -- specific malformed inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(frame(FrameKind.MESSAGE, b"\xff\xff"), id="bad-cbor"),
        pytest.param(message_frame([1, 2, 3]), id="not-a-map"),
        pytest.param(message_frame({"type": "Nope"}), id="unknown-type"),
        pytest.param(message_frame({"kind": "Ok"}), id="no-type"),
        pytest.param(message_frame({"type": 7}), id="type-not-text"),
        pytest.param(message_frame({"type": "GetBlock", "hash": b"x" * 31}), id="hash-31"),
        pytest.param(message_frame({"type": "GetBlock", "hash": "a" * 32}), id="hash-text"),
        pytest.param(message_frame({"type": "GetBlock"}), id="hash-missing"),
        pytest.param(
            message_frame({"type": "GetBlock", "hash": bytes(H), "order_tag": True}),
            id="order-tag-bool",
        ),
        pytest.param(
            message_frame({"type": "PutBlock", "hash": bytes(H), "header": "zstd"}),
            id="bad-header",
        ),
        pytest.param(message_frame({"type": "NeedBlockReply", "needed": 1}), id="needed-int"),
        pytest.param(message_frame({"type": "Error", "kind": "x", "message": 3}), id="err-msg"),
        pytest.param(message_frame({"type": "Admin", "request": [1]}), id="admin-list"),
        pytest.param(
            message_frame({"type": "Admin", "request": {"x": cbor2.undefined}}),
            id="admin-undefined",
        ),
        pytest.param(
            message_frame({"type": "Hello", "version": 1, "node_id": "", "nonce": b"n" * 32}),
            id="empty-node-id",
        ),
        pytest.param(message_frame({"type": "Auth", "proof": b"short"}), id="short-proof"),
        pytest.param(
            frame(FrameKind.MESSAGE, cbor2.dumps({"type": "Ok"}) + b"\x00"), id="trailing"
        ),
        pytest.param(frame(FrameKind.MESSAGE, cbor2.dumps(cbor2.CBORTag(1, 0))), id="tagged-value"),
        pytest.param(
            frame(FrameKind.MESSAGE, b"\xa2\x64type\x62Ok\x64type\x62Ok"), id="duplicate-key"
        ),
        pytest.param(frame(FrameKind.MESSAGE, b"\xa1\x01\x01"), id="int-key"),
        pytest.param(frame(FrameKind.MESSAGE, b"\x81" * 100 + b"\x00"), id="deep-nesting"),
        pytest.param(frame(FrameKind.MESSAGE, b"\x5b" + b"\xff" * 8), id="huge-bytestring"),
        pytest.param(frame(FrameKind.BODY_CHUNK, b"abc"), id="chunk-without-body"),
        pytest.param(frame(FrameKind.BODY_END, b""), id="end-without-body"),
        pytest.param(frame(9, b""), id="unknown-frame-kind"),
        pytest.param(frame(0, b""), id="frame-kind-zero"),
        pytest.param(message_frame({"type": "Ok"})[:-1], id="eof-mid-frame"),
        pytest.param(b"\x00\x00", id="eof-mid-header"),
        pytest.param(
            message_frame({"type": "PutBlock", "hash": bytes(H), "header": "plain"}),
            id="eof-mid-body",
        ),
        pytest.param(
            message_frame({"type": "PutBlock", "hash": bytes(H), "header": "plain"})
            + message_frame({"type": "Ok"}),
            id="message-inside-body",
        ),
        pytest.param(
            message_frame({"type": "PutBlock", "hash": bytes(H), "header": "plain"})
            + frame(FrameKind.BODY_END, b"x"),
            id="body-end-with-payload",
        ),
    ],
)
def test_malformed_input_raises_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_only(wire)


def test_oversized_message_frame_is_refused_from_its_header_alone() -> None:
    codec = FrameCodec()
    codec.receive_data(struct.pack(">IB", MAX_MESSAGE_SIZE + 1, FrameKind.MESSAGE))
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.next_event()


def test_oversized_body_chunk_is_refused_from_its_header_alone() -> None:
    codec = FrameCodec()
    codec.receive_data(message_frame({"type": "PutBlock", "hash": bytes(H), "header": "plain"}))
    assert isinstance(codec.next_event(), PutBlock)
    codec.receive_data(struct.pack(">IB", MAX_CHUNK_SIZE + 1, FrameKind.BODY_CHUNK))
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.next_event()


def test_body_larger_than_max_body_size_is_refused() -> None:
    sender = FrameCodec()
    wire = sender.send_message(PutBlock(H, BlockHeader.PLAIN))
    wire += sender.send_body_chunk(b"a" * 600) + sender.send_body_chunk(b"b" * 600)
    with pytest.raises(ProtocolError, match="body exceeds"):
        decode_only(wire, max_body_size=1000)


def test_body_exactly_max_body_size_is_accepted() -> None:
    sender = FrameCodec()
    wire = sender.send_message(PutBlock(H, BlockHeader.PLAIN))
    wire += sender.send_body_chunk(b"a" * 600) + sender.send_body_chunk(b"b" * 400)
    wire += sender.send_body_end()
    events = decode_only(wire, max_body_size=1000)
    assert events[-2:] == [BodyEnd(), ConnectionClosed()]


def test_clean_eof_between_exchanges_is_connection_closed() -> None:
    assert decode_only(message_frame({"type": "Ok"})) == [Ok(), ConnectionClosed()]
    assert decode_only(b"") == [ConnectionClosed()]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert decode_only(message_frame({"type": "Ok", "future": [1, 2]}))[0] == Ok()


def test_hello_carries_the_protocol_version() -> None:
    wire = FrameCodec().send_message(Hello(PROTOCOL_VERSION, "n1", b"\x01" * 32))
    assert cbor2.loads(wire[5:])["version"] == PROTOCOL_VERSION


def test_decoding_is_linear_and_the_buffer_is_compacted() -> None:
    sender = FrameCodec()
    small = sender.send_message(NeedBlockQuery(H))
    codec = FrameCodec()
    # Thousands of frames in one buffer: consuming them must not copy the rest each time.
    codec.receive_data(small * 5000)
    count = 0
    while codec.next_event() is not NEED_DATA:
        count += 1
    assert count == 5000
    assert len(codec._buf) == 0
    # One large chunk frame fed a byte at a time decodes without trouble.
    receiver = FrameCodec()
    receiver.receive_data(sender.send_message(PutBlock(H, BlockHeader.PLAIN)))
    assert isinstance(receiver.next_event(), PutBlock)
    big = sender.send_body_chunk(bytes(200_000))
    for i in range(len(big)):
        receiver.receive_data(big[i : i + 1])
        event = receiver.next_event()
    assert event == BodyChunk(bytes(200_000))


def test_local_misuse_raises_value_or_runtime_error() -> None:
    codec = FrameCodec()
    with pytest.raises(RuntimeError):
        codec.send_body_chunk(b"x")
    with pytest.raises(RuntimeError):
        codec.send_body_end()
    with pytest.raises(ValueError, match="exceeds"):
        codec.send_message(Admin({"big": b"x" * (MAX_MESSAGE_SIZE + 1)}))
    codec.send_message(PutBlock(H, BlockHeader.PLAIN))
    with pytest.raises(ValueError, match="exceeds"):
        codec.send_body_chunk(bytes(MAX_CHUNK_SIZE + 1))
    with pytest.raises(RuntimeError):
        codec.send_message(Ok())
    codec.send_body_end()
    codec.send_message(Ok())

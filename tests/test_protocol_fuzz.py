"""Property-based fuzzing of the protocol core (protocol/): any bytes -> a value or a protocol error.

Pure: no zmq, no sockets. Hypothesis draws frames (arbitrary bytes, JSON objects built from the real
field names of each message Struct, and byte-level mutations of that JSON) and typed lines, and checks
that the decoders and the command parser never fail with anything but their documented error, that
the errors follow docs/protocol.md section 8, and that whatever decodes re-encodes to the same thing.

Runs are derandomized (the same examples on every run, no example database) so CI is reproducible.
"""

from __future__ import annotations

import json

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zmq_chat.protocol import commands as c
from zmq_chat.protocol import messages as m
from zmq_chat.protocol.commands import MAX_LAST_MINUTES, USAGE, Command, parse_command
from zmq_chat.protocol.errors import ErrorCode, ProtocolError, UsageError
from zmq_chat.protocol.validation import is_valid_username
from zmq_chat.protocol.wire import END, MSG, REPLY, REQUEST_TYPES, decode_event, decode_push, decode_request, encode_request

MAX_REQ = 2**53
DECODE_CODES = {ErrorCode.FRAMES, ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_JSON, ErrorCode.BAD_FIELD}
"""The codes docs section 8 allows for a message that fails decoding."""

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ---------------------------------------------------------------------------------------

KINDS = list(REQUEST_TYPES)
INTERESTING = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\\u", b"\\ud83d", b"\\ude00", b"1e400",
               b"-0", b"null", b"\x00", b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x98",
               b"\xef\xbb\xbf", b"[" * 2000]  # fmt: skip
"""Byte strings worth inserting: JSON punctuation, escapes, odd numbers and invalid UTF-8."""

INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
                b"\xe2\x98", b"\xf0\x9f\x98", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80"]  # fmt: skip
"""Sequences that are never valid UTF-8 wherever they are put in an ASCII body."""

frames_of_bytes = st.lists(st.binary(max_size=48), max_size=4)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.integers(min_value=-2, max_value=10_002)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)


SHORT_KEYS = st.text(max_size=6)


def json_values(keys: st.SearchStrategy[str] = SHORT_KEYS) -> st.SearchStrategy:
    """Any JSON value (no NaN, no infinities, no lone surrogates), nested a few levels."""
    return st.recursive(
        json_scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


def field_names(cls: type[msgspec.Struct]) -> list[str]:
    """The JSON names of a Struct's fields, read from msgspec."""
    return [f.encode_name for f in msgspec.structs.fields(cls)]


def json_objects(names: list[str]) -> st.SearchStrategy[dict]:
    """JSON objects whose keys are mostly `names` (the real fields), with values of any JSON type."""
    keys = st.sampled_from(names) | st.sampled_from(["x", "Req", "REQ", ""]) | st.text(max_size=6)
    return st.dictionaries(keys, json_values(keys), max_size=len(names) + 2)


def near_valid(t: mi.Type) -> st.SearchStrategy:
    """Values of the msgspec type `t`, mostly valid, sometimes just past a limit (ints and list lengths)."""
    if isinstance(t, mi.IntType):
        low = -1 if t.ge is None else t.ge
        high = 10**6 if t.le is None else t.le
        return st.integers(min_value=low - 1, max_value=high + 1) | st.sampled_from([low, high])
    if isinstance(t, mi.StrType):
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 16, 16))
    if isinstance(t, mi.ListType):
        low = t.min_length or 0
        return st.lists(near_valid(t.item_type), min_size=max(low - 1, 0), max_size=low + 3)
    return json_values()


def near_valid_objects(cls: type[msgspec.Struct]) -> st.SearchStrategy[dict]:
    """Objects with the Struct's fields (optional ones sometimes left out) plus a few unknown keys."""
    fields = mi.type_info(cls).fields
    required = {f.encode_name: near_valid(f.type) for f in fields if f.required}
    optional = {f.encode_name: near_valid(f.type) for f in fields if not f.required}
    unknown = st.dictionaries(SHORT_KEYS, json_values(), max_size=2)
    known = st.fixed_dictionaries(required, optional=optional)
    return st.tuples(unknown, known).map(lambda pair: {**pair[0], **pair[1]})


@st.composite
def json_bodies(draw, objects: st.SearchStrategy[dict]) -> bytes:
    """An object from `objects` encoded by json.dumps: escaped ASCII or raw UTF-8, compact or spaced."""
    obj = draw(objects)
    ascii_only = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(obj, ensure_ascii=ascii_only, separators=separators).encode("utf-8")


@st.composite
def mutated(draw, bodies: st.SearchStrategy[bytes]) -> bytes:
    """A body from `bodies` after 1 to 4 random byte flips, insertions and deletions."""
    data = bytearray(draw(bodies))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=3))
        elif pos < len(data) and op == "flip":
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif pos < len(data):
            del data[pos]
    return bytes(data)


OBJECTS = {kind: near_valid_objects(cls) | json_objects(field_names(cls)) for kind, cls in REQUEST_TYPES.items()}
"""Request type -> JSON objects keyed mostly by its fields (built once: building strategies is slow)."""

BODIES = {
    kind: {"bytes": st.binary(max_size=64), "json": json_bodies(objects), "mutated": mutated(json_bodies(objects))}
    for kind, objects in OBJECTS.items()
}
"""Request type -> body strategies by kind of body."""


def request_frames(body_kind: str) -> st.SearchStrategy[list[bytes]]:
    """`[type, body]` with a real type; body is "bytes", "json" (json.dumps of an object), or "mutated"."""
    return st.one_of([st.tuples(st.just(kind), BODIES[kind][body_kind]).map(list) for kind in KINDS])


any_request_frames = request_frames("bytes") | request_frames("json") | request_frames("mutated")
mixed_frames = st.lists(
    st.sampled_from(KINDS) | st.binary(max_size=16) | st.one_of([BODIES[kind]["json"] for kind in KINDS]), max_size=4
)
"""0 to 4 frames mixing request types, bytes and JSON bodies (wrong frame counts with a readable req)."""


@st.composite
def non_utf8_request_frames(draw) -> list[bytes]:
    """`[type, body]` with a real type and a body that is not valid UTF-8 (often an ignored field)."""
    kind = draw(st.sampled_from(KINDS))
    obj = draw(OBJECTS[kind])
    text = json.dumps(obj).encode("ascii")  # ASCII, so any INVALID_UTF8 sequence stays invalid
    bad = draw(st.sampled_from(INVALID_UTF8))
    where = draw(st.sampled_from(["anywhere", "ignored-value", "ignored-key"]))
    if where == "anywhere":
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        body = text[:pos] + bad + text[pos:]
    else:
        member = b'"x": "a' + bad + b'"' if where == "ignored-value" else b'"a' + bad + b'": 1'
        body = text[:-1] + (b", " if obj else b"") + member + b"}"
    return [kind, body]


@st.composite
def lone_surrogate_request_frames(draw) -> list[bytes]:
    """`[type, body]`: a real type and a JSON object with one more member, ignored by the decoder, whose
    key or (nested) string value holds a lone surrogate; json.dumps writes it as a `\\uXXXX` escape."""
    kind = draw(st.sampled_from(KINDS))
    obj = draw(OBJECTS[kind])
    lone = draw(st.text(max_size=3)) + draw(st.characters(categories=["Cs"])) + draw(st.text(max_size=3))
    key = "zz-ignored"  # longer than any drawn key: never collides with one
    member = draw(st.sampled_from([{lone: 1}, {key: lone}, {key: [1, {"y": lone}]}]))
    obj = {**member, **obj} if draw(st.booleans()) else {**obj, **member}
    return [kind, json.dumps(obj).encode("ascii")]


PUSH_KINDS = [REPLY, MSG, END, b"bcast", b"presence"]
PUSH_FIELDS = sorted(
    set(field_names(m.PrivateMessage) + field_names(m.End) + field_names(m.Event) + ["req", "status", "code"])
)
reply_objects = st.fixed_dictionaries(
    {"req": st.none() | st.integers(min_value=0, max_value=MAX_REQ), "status": st.sampled_from(["ok", "error", "x"])},
    optional={"code": st.sampled_from([c.value for c in ErrorCode]), "message": st.text(max_size=12)},
)
push_json = json_bodies(
    reply_objects
    | near_valid_objects(m.PrivateMessage)
    | near_valid_objects(m.End)
    | near_valid_objects(m.Event)
    | json_objects(PUSH_FIELDS)
)
push_bodies = st.binary(max_size=64) | push_json | mutated(push_json)
push_frames = st.tuples(st.sampled_from(PUSH_KINDS), push_bodies).map(list) | st.lists(
    st.sampled_from(PUSH_KINDS) | st.binary(max_size=12) | push_bodies, max_size=4
)

COMMAND_WORDS = [*USAGE, "send all", "SEND", "Last", "send (", "send ()", "login alice", "reg all"]
command_lines = st.text() | st.tuples(
    st.sampled_from(COMMAND_WORDS), st.sampled_from([" ", "  ", "\t", "", "\n"]), st.text(max_size=40)
).map("".join)


# -- checks -------------------------------------------------------------------------------------------


def check_decode_error(err: ProtocolError) -> None:
    """The error of a message that failed decoding follows docs section 8."""
    assert err.code in DECODE_CODES
    assert isinstance(err.message, str) and err.message
    assert err.req is None or (type(err.req) is int and 0 <= err.req <= MAX_REQ)
    if err.code is ErrorCode.BAD_JSON:
        assert err.req is None


def decode_checked(frames: list[bytes]) -> tuple[bytes, m.Request] | ProtocolError:
    """decode_request(frames) -> (type, request) that round-trips, or the (checked) ProtocolError.

    Any other exception propagates and fails the test.
    """
    try:
        kind, request = decode_request(frames)
    except ProtocolError as err:
        check_decode_error(err)
        return err
    assert type(request) is REQUEST_TYPES[kind]
    again = encode_request(request)
    assert again[0] == kind
    assert decode_request(again) == (kind, request)
    return kind, request


def check_command(command: Command, max_chars: int) -> None:
    """A parsed command keeps the rules of protocol.commands (canonical word, valid users and text)."""
    assert isinstance(command, Command) and command.word in USAGE
    if isinstance(command, (c.Broadcast, c.Send)):
        assert 1 <= len(command.text) <= max_chars and not command.text.isspace()
    if isinstance(command, c.Send):
        assert command.to and len(set(command.to)) == len(command.to)
        assert all(is_valid_username(user) for user in command.to)
    if isinstance(command, c.Last):
        assert 1 <= command.minutes <= MAX_LAST_MINUTES
    if isinstance(command, c.Busy):
        assert len(command.text) <= max_chars


# -- properties ---------------------------------------------------------------------------------------


@FUZZ
@given(frames_of_bytes)
@example([b"ping", b"[" * 250_000])
@example([b"ping", b'{"req": 1, "x": "\xff"}'])
@example([b"hello", b'{"\\ud83d": 1, "req": 1, "version": 1}'])
def test_any_frames_give_a_request_or_a_protocol_error(frames):
    decode_checked(frames)


@FUZZ
@given(any_request_frames)
def test_real_types_with_any_body_give_a_request_or_a_protocol_error(frames):
    decode_checked(frames)


@FUZZ
@given(request_frames("json"))
@example([b"ping", b'{"req": 0}'])
@example([b"ping", b"[" * 200 + b"]" * 200])
def test_valid_json_is_never_e_bad_json(frames):
    # json.dumps output is valid UTF-8 JSON: it may have the wrong fields, never the wrong syntax.
    result = decode_checked(frames)
    assert not (isinstance(result, ProtocolError) and result.code is ErrorCode.BAD_JSON), result


@FUZZ
@given(any_request_frames | mixed_frames)
def test_errors_carry_a_decoding_code_and_a_valid_req(frames):
    result = decode_checked(frames)
    if isinstance(result, ProtocolError) and result.code is not ErrorCode.BAD_JSON and result.req is not None:
        assert result.req == json.loads(frames[-1].decode("utf-8"))["req"]


@FUZZ
@given(non_utf8_request_frames() | request_frames("bytes"))
@example([b"send", b'{"req": 1, "\xed\xa0\x80": 2}'])
def test_a_body_that_is_not_utf8_is_never_accepted(frames):
    try:
        frames[1].decode("utf-8")
    except UnicodeDecodeError:
        result = decode_checked(frames)
        assert isinstance(result, ProtocolError) and result.code is ErrorCode.BAD_JSON
        assert result.req is None


@FUZZ
@given(lone_surrogate_request_frames())
@example([b"ping", b'{"req": 1, "x": "\\ud83d"}'])
def test_a_lone_surrogate_escape_is_never_accepted(frames):
    result = decode_checked(frames)
    assert isinstance(result, ProtocolError) and result.code is ErrorCode.BAD_JSON
    assert result.req is None


@FUZZ
@given(push_frames)
@example([b"msg", b'{"id": 1, "from": "a", "x": "\xff"}'])
@example([b"reply", b"[" * 250_000])
def test_decode_push_gives_a_value_or_a_protocol_error(frames):
    try:
        kind, value = decode_push(frames)
    except ProtocolError as err:
        check_decode_error(err)
        return
    expected = {REPLY: dict, MSG: m.PrivateMessage, END: m.End}[kind]
    assert isinstance(value, expected)
    if kind == REPLY:
        assert "req" in value and value["status"] in ("ok", "error")


@FUZZ
@given(push_frames)
@example([b"bcast", b'{"seq": 1, "ts": 1, "kind": "bcast", "user": "a", "x": "\xff"}'])
def test_decode_event_gives_an_event_or_a_protocol_error(frames):
    try:
        event = decode_event(frames)
    except ProtocolError as err:
        check_decode_error(err)
        return
    assert isinstance(event, m.Event) and event.kind in ("bcast", "presence")


@FUZZ
@given(command_lines, st.integers(min_value=1, max_value=2000))
@example("send (alice bob) hi", 1000)
@example("send all \x00", 1000)
def test_parse_command_gives_a_command_or_a_usage_error(line, max_chars):
    try:
        command = parse_command(line, max_chars)
    except UsageError as err:
        assert isinstance(err.message, str) and err.message
        assert err.usage == "" or err.usage in USAGE.values()
        return
    check_command(command, max_chars)

"""docs/protocol.md against protocol.wire and protocol.messages: the spec names every type, code,
reason and event the code defines, its literal request examples decode to every field, and its
example session decodes and encodes back to the same fields (parsers in tests/protocol_doc.py).

Pure: no zmq, no sockets.
"""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from zmq_chat.protocol import messages as m
from zmq_chat.protocol import wire
from zmq_chat.protocol.errors import ErrorCode
from zmq_chat.protocol.wire import (
    REQUEST_TYPES,
    decode_event,
    decode_events,
    decode_push,
    decode_request,
    encode_event,
    encode_json,
    encode_msg,
    encode_request,
)
from tests.protocol_doc import DOC, doc_text, documented_reply_fields, spec_request_examples, spec_session
from tests.wire_cases import body, request_error


# -- the spec file names everything the code defines ------------------------------------------------


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_mentions_every_type_code_reason_and_event():
    text = doc_text()
    for kind in REQUEST_TYPES:
        assert re.search(rf'\[b"{kind.decode()}",\s+\{{"req": ', text)  # a literal example of each request
    for code in ErrorCode:
        assert f"`{code.value}`" in text
    for reason in m.END_REASONS:
        assert f"`{reason}`" in text
    for event in m.PRESENCE_EVENTS:
        assert f'"{event}"' in text
    for fragment in ("4119", "4121", "65536", "2^53", "10080", "10000", "1..64", "1..100", "1..1000",
                     "[A-Za-z0-9]{3,32}", "CURVE", "SHA256:", "Z85", "welcome.", '[b"hb"'):
        assert fragment in text
    from zmq_chat.broker.config import Config
    assert f"**{Config().max_msg_bytes} bytes" in text  # the ROUTER's ZMQ_MAXMSGSIZE as specified


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_request_examples_name_every_field_of_every_request():
    examples = spec_request_examples()
    assert [kind for kind, _ in examples] == list(REQUEST_TYPES)
    for kind, obj in examples:
        decoded_kind, request = decode_request([kind, body(obj)])
        assert decoded_kind == kind
        # every field of the struct, under the name and with the value of the example: a field
        # renamed (or added) in protocol.messages but not in the spec fails here
        assert {f.encode_name: getattr(request, f.name) for f in msgspec.structs.fields(type(request))} == obj


@pytest.mark.skipif(not DOC.exists(), reason="docs/protocol.md missing")
def test_spec_example_session_decodes_and_encodes_back_to_the_same_fields():
    session = spec_session()
    documented = documented_reply_fields()
    asked: dict[int, str] = {}  # req -> request type
    for direction, kind, obj in session:
        raw = body(obj)
        if direction == "C>" and kind in REQUEST_TYPES:
            _, request = decode_request([kind, raw])
            assert json.loads(encode_request(request)[1]) == obj
            asked[obj["req"]] = kind.decode()
        elif direction == "C>":  # the unknown type: the next reply is this error, word for word
            err = request_error([kind, raw])
            asked[obj["req"]] = {"code": err.code.value, "message": err.message, "req": err.req}
        elif kind == wire.REPLY:
            assert decode_push([kind, raw]) == (kind, obj)
            question = asked[obj["req"]]
            if isinstance(question, dict):
                assert {k: obj[k] for k in ("code", "message", "req")} == question
            elif obj["status"] == "ok":
                assert set(obj) - {"req", "status"} == documented[question], question
                for event in obj.get("events", []):
                    assert json.loads(encode_json(decode_events([event])[0])) == event
            else:  # docs 6.2: a send some recipients did not get
                partial_send = {"req", "status", "code", "message", "unknown", "full", "ids", "ts", "busy", "dup"}
                assert (question, set(obj)) == ("send", partial_send)
        elif kind == wire.MSG:
            _, msg = decode_push([kind, raw])
            assert json.loads(encode_msg(msg)[1]) == obj
        elif kind in (wire.TOPIC_BCAST, wire.TOPIC_PRESENCE):
            frames = encode_event(decode_event([kind, raw]))
            assert frames[0] == kind and json.loads(frames[1]) == obj
        else:
            assert (kind == wire.TOPIC_HEARTBEAT or kind.startswith(wire.WELCOME_PREFIX)) and set(obj) == {"seq", "ts"}
    kinds = [kind for _, kind, _ in session]
    assert {b"hello", b"login", b"history", b"ack", b"send", b"broadcast", b"ping", b"lats", b"logout",
            b"reply", b"msg", b"bcast", b"hb"} <= set(kinds) and kinds.count(b"reply") == 9

from __future__ import annotations

from app.utils.sse import SseEvent, encode_sse, iter_sse_events


def events(text: str) -> list[SseEvent]:
    return list(iter_sse_events(text.split("\n")))


def test_single_event_defaults_to_message():
    assert events('data: {"a": 1}\n\n') == [SseEvent(event="message", data='{"a": 1}')]


def test_multiline_data_is_joined_with_newline():
    assert events("data: one\ndata: two\n\n")[0].data == "one\ntwo"


def test_named_event_and_id():
    [ev] = events("event: message_start\nid: 7\ndata: x\n\n")
    assert (ev.event, ev.data, ev.id) == ("message_start", "x", "7")


def test_id_persists_and_event_type_resets():
    _first, second = events("event: a\nid: 1\ndata: x\n\ndata: y\n\n")
    assert second.event == "message"
    assert second.id == "1"


def test_comments_are_ignored():
    assert events(": keep-alive\n\ndata: x\n: mid\n\n") == [SseEvent("message", "x")]


def test_blank_line_without_data_dispatches_nothing():
    assert events("event: ping\n\n") == []


def test_final_event_without_blank_line_is_not_dispatched():
    assert events("data: a\n\ndata: cut") == [SseEvent("message", "a")]


def test_only_one_leading_space_is_stripped_and_no_colon_means_empty_value():
    assert events("data:  two spaces\n\n")[0].data == " two spaces"
    assert events("data:nospace\n\n")[0].data == "nospace"
    assert events("data\ndata: x\n\n")[0].data == "\nx"


def test_lines_with_crlf_endings_and_bom():
    lines = ["\ufeffdata: a\r\n", "\r\n", "event: e\r\n", "data: b\r\n", "\r\n"]
    assert list(iter_sse_events(lines)) == [SseEvent("message", "a"), SseEvent("e", "b")]


def test_id_with_null_is_ignored():
    assert events("id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n")[1].id == "1"


def test_unknown_fields_and_retry_are_ignored():
    assert events("retry: 10\nfoo: bar\ndata: z\n\n") == [SseEvent("message", "z")]


def test_encode_round_trips():
    raw = encode_sse("line1\nline2", event="delta")
    assert raw == b"event: delta\ndata: line1\ndata: line2\n\n"
    text = raw.decode()
    assert events(text) == [SseEvent("delta", "line1\nline2")]


def test_encode_without_event():
    assert encode_sse('{"x":1}') == b'data: {"x":1}\n\n'

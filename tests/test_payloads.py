"""Parsing: bodies → fields → typed CallEvent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exporter.errors import Rejected
from exporter.payloads import _TYPED_FIELDS as _TYPED_FIELDS
from exporter.payloads import (
    CallEvent,
    collect_fields,
    decode_pairs,
    decode_query,
    normalize_direction,
    normalize_end_reason,
    normalize_status,
    parse_call_event,
    parse_calling_event,
    parse_message_event,
    parse_recording_event,
    parse_timestamp,
    parse_transcription_event,
)

FORM = "application/x-www-form-urlencoded"

# Every field of seed 000, as the provider sends them: all strings.
FULL_VOICE = {
    "AccountSid": "b3877c40-da60-4998-90ad-b792e98472af",
    "ApiVersion": "2010-04-01",
    "AudioInAveragePtime": "20",
    "AudioInDtmfPacketCount": "3",
    "AudioInFlushPacketCount": "2",
    "AudioInJitterMaxVariance": "25",
    "AudioInJitterMinVariance": "1",
    "AudioInLargestJbSize": "60",
    "AudioInMos": "4.3",
    "AudioInMediaPacketCount": "990",
    "AudioInSkipPacketCount": "10",
    "AudioOutDtmfPacketCount": "4",
    "AudioOutMediaPacketCount": "1001",
    "CallbackSource": "call-progress-events",
    "CallDuration": "142",
    "CallerName": "Jane Doe",
    "CallSid": "b3877c40-da60-4998-90ad-b792e98472ca",
    "CallStatus": "completed",
    "Direction": "outbound-api",
    "ForwardedFrom": "+15550001111",
    "From": "+15551234567",
    "ParentCallSid": "p-1",
    "RecordingDuration": "140",
    "RecordingSid": "r-1",
    "RecordingUrl": "https://example.com/r-1.wav",
    "SequenceNumber": "3",
    "SipInviteResultPhrase": "OK",
    "SipResultCode": "200",
    "Timestamp": "Thu, 09 Nov 2023 17:05:04 +0000",
    "To": "+18005559876",
}


def parse(fields: dict[str, str], endpoint: str = "voice") -> CallEvent:
    return parse_call_event(fields, endpoint)


def test_every_seed_field_is_typed() -> None:
    event = parse(FULL_VOICE)
    assert event.call_sid == FULL_VOICE["CallSid"]
    assert (event.status, event.direction) == ("completed", "outbound-api")
    assert event.account_sid == FULL_VOICE["AccountSid"]
    assert event.api_version == "2010-04-01"
    assert event.audio_in_average_ptime == 20.0
    assert event.audio_in_dtmf_packet_count == 3
    assert event.audio_in_flush_packet_count == 2
    assert event.audio_in_jitter_max_variance == 25.0
    assert event.audio_in_jitter_min_variance == 1.0
    assert event.audio_in_largest_jb_size == 60
    assert event.audio_in_mos == 4.3
    assert event.audio_in_media_packet_count == 990
    assert event.audio_in_skip_packet_count == 10
    assert event.audio_out_dtmf_packet_count == 4
    assert event.audio_out_media_packet_count == 1001
    assert event.callback_source == "call-progress-events"
    assert event.call_duration == 142
    assert event.caller_name == "Jane Doe"
    assert event.forwarded_from == "+15550001111"
    assert event.from_ == "+15551234567"
    assert event.to == "+18005559876"
    assert event.parent_call_sid == "p-1"
    assert event.recording_duration == 140
    assert event.recording_sid == "r-1"
    assert event.recording_url == "https://example.com/r-1.wav"
    assert event.sequence_number == 3
    assert event.sip_invite_result_phrase == "OK"
    assert event.sip_result_code == 200
    assert event.timestamp == datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)
    assert event.packet_loss_ratio == pytest.approx(0.01)
    assert event.is_final


def test_unknown_fields_are_ignored() -> None:
    event = parse({"CallSid": "a", "CallStatus": "ringing", "HangupBy": "x", "Foo": "bar"})
    assert event.status == "ringing"


def test_answered_counts_as_in_progress() -> None:
    assert normalize_status("answered") == "in-progress"
    assert normalize_status("In-Progress") == "in-progress"


def test_unknown_enum_values_are_bounded() -> None:
    assert normalize_status("exploded") == "unknown"
    assert normalize_direction("sideways") == "unknown"
    assert normalize_direction(None) == "unknown"
    event = parse({"CallSid": "a", "CallStatus": "weird", "Direction": "+15551234567"})
    assert (event.status, event.direction) == ("unknown", "unknown")


def test_inbound_endpoint_is_inbound_whatever_the_payload_says() -> None:
    event = parse({"CallSid": "a", "CallStatus": "completed", "Direction": "outbound-api"},
                  "inbound")
    assert event.direction == "inbound"


@pytest.mark.parametrize("missing", ["CallSid", "CallStatus"])
def test_missing_required_field_names_it(missing: str) -> None:
    fields = {"CallSid": "a", "CallStatus": "ringing"}
    fields[missing] = " "
    with pytest.raises(Rejected) as info:
        parse(fields)
    assert info.value.status == 400
    assert missing in info.value.message


@pytest.mark.parametrize(("field", "value"), [
    ("CallDuration", "ten"),
    ("CallDuration", "-5"),
    ("CallDuration", "12.5"),
    ("AudioInMos", "abc"),
    ("AudioInMos", "N/A"),
    ("AudioInMos", "7.5"),
    ("AudioInMos", "5.1"),
    ("AudioInMos", "-1"),
    ("AudioInMos", "nan"),
    ("AudioInMos", "NaN"),
    ("SequenceNumber", "1.5"),
    ("SequenceNumber", "N/A"),
    ("SipResultCode", "999"),
    ("SipResultCode", "0"),
    ("AudioInJitterMaxVariance", "inf"),
    ("AudioInJitterMaxVariance", "n/a"),
    ("AudioInMediaPacketCount", "many"),
    ("AudioInSkipPacketCount", "-1"),
    ("AudioInFlushPacketCount", "x"),
    ("AudioInLargestJbSize", "big"),
    # int() and float() read these; the provider never sends them
    ("CallDuration", "1_000"),
    ("CallDuration", "\u0661\u0662\u0663"),  # Arabic-Indic 123
    ("AudioInMos", "\U0001d7d2"),  # mathematical bold 4
    ("AudioInMos", "4\u0665"),
    ("SequenceNumber", "\uff13"),  # full-width 3
])
def test_a_bad_optional_number_is_skipped_and_named(field: str, value: str) -> None:
    event = parse({"CallSid": "a", "CallStatus": "completed", "CallDuration": "12",
                   "AudioInMos": "4.2", field: value})
    assert event.status == "completed"
    assert event.invalid_fields == (field,)
    assert all(getattr(event, attr) is None for attr, name, *_ in _TYPED_FIELDS
               if name == field)
    others = {"CallDuration": 12, "AudioInMos": 4.2}
    others.pop(field, None)
    assert all(getattr(event, attr) == others[name] for attr, name, *_ in _TYPED_FIELDS
               if name in others)


@pytest.mark.parametrize(("field", "value", "parsed"), [
    ("CallDuration", " 12 ", 12), ("CallDuration", "+12", 12), ("AudioInMos", "4.", 4.0),
    ("AudioInMos", ".5", 0.5), ("AudioInJitterMaxVariance", "1e-05", 1e-05),
    ("SequenceNumber", "0", 0), ("SipResultCode", "486", 486),
])
def test_plain_ascii_numbers_are_read(field: str, value: str, parsed: float) -> None:
    event = parse({"CallSid": "a", "CallStatus": "completed", field: value})
    assert [getattr(event, attr) for attr, name, *_ in _TYPED_FIELDS if name == field] \
        == [parsed]
    assert event.invalid_fields == ()


def test_every_bad_field_is_named_once_in_order() -> None:
    event = parse({"CallSid": "a", "CallStatus": "completed", "SequenceNumber": "x",
                   "AudioInMos": "y", "CallDuration": "7"})
    assert event.invalid_fields == ("SequenceNumber", "AudioInMos")
    assert event.sequence_number is None and event.call_duration == 7


def test_empty_optional_values_are_none() -> None:
    event = parse({"CallSid": "a", "CallStatus": "completed", "AudioInMos": "",
                   "CallDuration": "", "Timestamp": ""})
    assert event.audio_in_mos is None and event.call_duration is None
    assert event.timestamp is None and not event.timestamp_invalid


@pytest.mark.parametrize(("text", "expected"), [
    ("Thu, 09 Nov 2023 17:05:04 +0000", datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)),
    ("Thu, 09 Nov 2023 17:05:04 -0000", datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)),
    ("Thu, 09 Nov 2023 17:05:04", datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)),
    ("Thu, 09 Nov 2023 12:05:04 -0500", datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)),
    ("Thu, 09 Nov 2023 17:05:04 GMT", datetime(2023, 11, 9, 17, 5, 4, tzinfo=UTC)),
    ("Thur, 21 Sept 2023 17:05:04 +0000", datetime(2023, 9, 21, 17, 5, 4, tzinfo=UTC)),
    ("9 Nov 2023 17:05 +0000", datetime(2023, 11, 9, 17, 5, 0, tzinfo=UTC)),
])
def test_timestamps_are_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is not None


def test_bad_timestamp_is_flagged_not_refused() -> None:
    event = parse({"CallSid": "a", "CallStatus": "ringing", "Timestamp": "yesterday-ish"})
    assert event.timestamp is None and event.timestamp_invalid


def test_form_body_decodes_plus_percent_and_blank_values() -> None:
    body = b"CallSid=a&CallStatus=ringing&CallerName=Jane+Doe%20Jr&To=%2B1555&Empty="
    pairs = decode_pairs(FORM, body, max_fields=50)
    assert pairs == [("CallSid", "a"), ("CallStatus", "ringing"),
                     ("CallerName", "Jane Doe Jr"), ("To", "+1555"), ("Empty", "")]


def test_json_body_converts_numbers_and_drops_nulls() -> None:
    body = json.dumps({"CallSid": "a", "CallStatus": "completed", "CallDuration": 12,
                       "AudioInMos": 4.5, "Direction": None}).encode()
    fields = collect_fields(decode_pairs("application/json", body, max_fields=50),
                            max_fields=50, max_field_length=100)
    event = parse(fields)
    assert (event.call_duration, event.audio_in_mos, event.direction) == (12, 4.5, "unknown")


def test_json_nested_objects_flatten_to_dotted_names_and_arrays_are_skipped() -> None:
    body = json.dumps({"event_type": "calling.call.state", "timestamp": 1.5,
                       "params": {"call_id": "c1", "device": {"type": "phone"},
                                  "tags": ["a", {"b": 1}], "end_reason": None},
                       "after": True}).encode()
    assert decode_pairs("application/json", body, max_fields=50) == [
        ("event_type", "calling.call.state"), ("timestamp", "1.5"), ("after", "true"),
        ("params.call_id", "c1"), ("params.device.type", "phone")]


def test_json_nesting_counts_against_the_field_limit_and_any_depth_is_safe() -> None:
    wide = json.dumps({"a": {str(i): i for i in range(60)}}).encode()
    with pytest.raises(Rejected, match="too many fields"):
        decode_pairs("application/json", wide, max_fields=50)
    deep = b'{"a":' * 900 + b'"x"' + b"}" * 900  # about what json.loads itself allows
    assert decode_pairs("application/json", deep, max_fields=50) == [("a." * 899 + "a", "x")]


@pytest.mark.parametrize("body", [b"[1, 2]", b"{not json", b"\xff\xfe", b"\"text\""])
def test_bad_json_is_invalid(body: bytes) -> None:
    with pytest.raises(Rejected) as info:
        decode_pairs("application/json", body, max_fields=50)
    assert info.value.status == 400


def test_multipart_body() -> None:
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"CallSid\"\r\n\r\na\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"CallStatus\"\r\n\r\n"
            f"busy\r\n--{boundary}--\r\n").encode()
    pairs = decode_pairs("multipart/form-data", body, max_fields=50,
                         raw_content_type=f"multipart/form-data; boundary={boundary}")
    assert pairs == [("CallSid", "a"), ("CallStatus", "busy")]


def test_unsupported_content_type_is_415() -> None:
    with pytest.raises(Rejected) as info:
        decode_pairs("text/plain", b"CallSid=a", max_fields=50)
    assert (info.value.status, info.value.outcome) == (415, "unsupported")


def test_field_caps() -> None:
    many = urlencode([(f"f{i}", "x") for i in range(60)]).encode()
    with pytest.raises(Rejected):
        decode_pairs(FORM, many, max_fields=50)
    with pytest.raises(Rejected) as info:
        collect_fields([("CallSid", "a" * 101)], max_fields=50, max_field_length=100)
    assert "CallSid" in info.value.message


def test_repeated_names_first_wins() -> None:
    fields = collect_fields(decode_query("CallSid=a&CallSid=b&CallStatus=busy", max_fields=9),
                            max_fields=9, max_field_length=99)
    assert fields["CallSid"] == "a"


def test_bad_utf8_in_form_is_invalid() -> None:
    with pytest.raises(Rejected):
        decode_pairs(FORM, b"CallSid=%ff%fe&CallStatus=busy", max_fields=9)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "CallSid", ""]), st.text(max_size=6)),
                max_size=8), st.integers(min_value=0, max_value=7))
def test_collect_fields_keeps_the_first_of_each_name_within_the_limits(
        pairs: list[tuple[str, str]], max_length: int) -> None:
    expected: dict[str, str] = {}
    too_long = None
    for name, value in pairs:
        if too_long is None and max(len(name), len(value)) > max_length:
            too_long = name
        expected.setdefault(name, value)
    # The form text the pairs came from is at least as long as any name or value.
    text_length = len("&".join(f"{name}={value}" for name, value in pairs))
    for source_length in (None, text_length):
        if too_long is not None:
            with pytest.raises(Rejected, match=f"field {too_long[:64]!r} is longer"):
                collect_fields(pairs, max_fields=8, max_field_length=max_length,
                               source_length=source_length)
        else:
            assert collect_fields(pairs, max_fields=8, max_field_length=max_length,
                                  source_length=source_length) == expected


def assert_reads_as_parse_qsl(text: str) -> None:
    try:
        expected: list[tuple[str, str]] | None = parse_qsl(
            text, keep_blank_values=True, max_num_fields=20, errors="strict")
    except (ValueError, UnicodeDecodeError):
        expected = None  # parse_qsl refuses it: so must we, with a 400
    if expected is None:
        with pytest.raises(Rejected) as info:
            decode_pairs(FORM, text.encode(), max_fields=20)
        assert info.value.status == 400
    else:
        assert decode_pairs(FORM, text.encode(), max_fields=20) == expected


@given(st.text(alphabet="ab=&+%26DdC3A9é0 ", max_size=40))
def test_form_fast_path_reads_bodies_exactly_as_parse_qsl(text: str) -> None:
    assert_reads_as_parse_qsl(text)


@given(st.text(alphabet="%0123456789aAbBcCdDeEfFgGx\\=&+é ", max_size=40))
@example("a=%7f%7F%2b%2B&b=%80")
@example("a=%5C%5c&b=%5Cx41")  # escaped backslashes: bytes of the value, not escapes
@example("a=\\x41%41&b=%41\\")  # a backslash of the body's own: the loop decodes it
@example("a=%C3%a9+%3A&b=%g1%4")
@example("a=%2F%")
def test_escapes_read_exactly_as_parse_qsl(text: str) -> None:
    """ASCII escapes in both cases, the 7F/80 edge, non-ASCII and broken escapes."""
    assert_reads_as_parse_qsl(text)


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
       st.integers(min_value=-1439, max_value=1439), st.booleans())
def test_canonical_timestamps_read_as_email_utils_reads_them(
        moment: datetime, offset_minutes: int, weekday: bool) -> None:
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = moment.strftime("%d %b %Y %H:%M:%S") + f" {sign}{hours:02d}{minutes:02d}"
    if weekday:
        text = moment.strftime("%a, ") + text
    expected = parsedate_to_datetime(text)
    expected = (expected.replace(tzinfo=UTC) if expected.tzinfo is None
                else expected).astimezone(UTC)
    assert parse_timestamp(text) == expected


# --- messages, recordings, transcriptions ------------------------------------------------

def test_message_event_is_typed_and_keeps_no_body() -> None:
    from exporter.payloads import MessageEvent, parse_message_event

    event = parse_message_event({
        "MessageSid": "m", "MessageStatus": "Undelivered", "Body": "secret", "NumSegments": "3",
        "NumMedia": "x", "ErrorCode": "30003", "Direction": "outbound-api",
        "ErrorMessage": "Unreachable"})
    assert event == MessageEvent(sid="m", status="undelivered", raw_status="Undelivered",
                                 direction="outbound-api", num_segments=3, num_media=None,
                                 error_code="30003", error_message="Unreachable",
                                 invalid_fields=("NumMedia",))
    assert "secret" not in repr(event)
    assert "Unreachable" not in repr(event.log_fields())


@pytest.mark.parametrize(("raw", "known", "expected"), [
    ("sent", ("sent", "unknown"), "sent"),
    (" READ ", ("read", "unknown"), "read"),
    ("unknown", ("sent", "unknown"), "unknown"),
    ("stopped", ("sent", "unknown"), "unknown"),
    (None, ("sent", "unknown"), "unknown"),
])
def test_normalize_closes_the_label_set(raw: str | None, known: tuple[str, ...],
                                        expected: str) -> None:
    from exporter.payloads import normalize

    assert normalize(raw, known) == expected


def test_recording_and_transcription_events() -> None:
    from exporter.payloads import parse_recording_event, parse_transcription_event

    rec = parse_recording_event({"RecordingSid": "r", "RecordingStatus": "completed",
                                 "RecordingDuration": "12", "RecordingChannels": "two",
                                 "RecordingSource": "DialVerb"})
    assert (rec.status, rec.duration, rec.channels, rec.source, rec.invalid_fields) == (
        "completed", 12, None, "DialVerb", ("RecordingChannels",))
    empty = parse_transcription_event({"TranscriptionSid": "t", "TranscriptionStatus": "completed",
                                       "TranscriptionText": ""})
    assert empty.text_length == 0
    missing = parse_transcription_event({"TranscriptionSid": "t",
                                         "TranscriptionStatus": "in-progress"})
    assert (missing.text_length, missing.status) == (None, "unknown")
    bad = parse_recording_event({"RecordingSid": "r", "RecordingStatus": "completed",
                                 "RecordingDuration": "1.5h"})
    assert (bad.status, bad.duration, bad.invalid_fields) == (
        "completed", None, ("RecordingDuration",))


# --- found by QA: values too large for the metrics -----------------------------------------
# A 400-digit integer fits the default field-length limit and int(), but not a float: the
# metrics (histogram sums, counters) then raise OverflowError after part of the event was
# recorded, and the request gets a 500. Counts and durations need an upper bound here.

HUGE = "9" * 400


@pytest.mark.parametrize("field", ["CallDuration", "AudioInMediaPacketCount",
                                   "AudioInSkipPacketCount", "AudioInFlushPacketCount"])
def test_integer_too_large_for_a_metric_is_skipped_by_name(field: str) -> None:
    event = parse_call_event({"CallSid": "c", "CallStatus": "completed", "AudioInMos": "4",
                              field: HUGE}, "voice")
    assert event.invalid_fields == (field,)
    assert event.audio_in_mos == 4.0


@pytest.mark.parametrize(("parse", "fields", "named"), [
    (parse_message_event, {"MessageSid": "m", "MessageStatus": "sent", "NumSegments": "two",
                           "NumMedia": "\u0661"}, ("NumSegments", "NumMedia")),
    (parse_recording_event, {"RecordingSid": "r", "RecordingStatus": "completed",
                             "RecordingDuration": "1_5", "RecordingChannels": "2"},
     ("RecordingDuration",)),
], ids=["message", "recording"])
def test_item_events_skip_bad_numbers_by_name(parse: Any, fields: dict[str, str],
                                              named: tuple[str, ...]) -> None:
    event = parse(fields)
    assert event.invalid_fields == named
    assert event.status in ("sent", "completed")


def test_json_number_past_the_int_digit_limit_is_invalid() -> None:
    body = b'{"CallSid": "c", "CallStatus": "completed", "SequenceNumber": ' + b"9" * 5000 + b"}"
    with pytest.raises(Rejected) as caught:
        decode_pairs("application/json", body, max_fields=200)
    assert caught.value.status == 400


@pytest.mark.parametrize(("parse", "sid_field", "status_field"), [
    (lambda f: parse_call_event(f, "voice"), "CallSid", "CallStatus"),
    (lambda f: parse_message_event(f), "MessageSid", "MessageStatus"),
    (lambda f: parse_recording_event(f), "RecordingSid", "RecordingStatus"),
    (lambda f: parse_transcription_event(f), "TranscriptionSid", "TranscriptionStatus"),
], ids=["call", "message", "recording", "transcription"])
def test_sid_far_longer_than_any_provider_id_is_refused_by_name(
        parse: Any, sid_field: str, status_field: str) -> None:
    # Provider ids are 36-character UUIDs (Twilio's 34); a sid is a tracker key held for
    # hours, so its length bounds the trackers' memory.
    with pytest.raises(Rejected) as caught:
        parse({sid_field: "x" * 4000, status_field: "completed"})
    assert caught.value.status == 400
    assert sid_field in caught.value.message


# --- JSON calling events ---------------------------------------------------------------------

def calling_fields(state: str, **params: str) -> dict[str, str]:
    return {"event_type": "calling.call.state", "timestamp": "1700000000.25",
            "params.call_id": "c1", "params.call_state": state, "params.direction": "inbound",
            "params.device.params.from_number": "+15551234567", **params}


@pytest.mark.parametrize(("state", "sequence", "status"), [
    ("queued", 0, "queued"), ("created", 1, "initiated"), ("initiated", 1, "initiated"),
    ("ringing", 2, "ringing"), ("answered", 3, "in-progress"), ("ended", 5, "completed"),
])
def test_call_states_map_onto_call_events(state: str, sequence: int, status: str) -> None:
    event = parse_calling_event(calling_fields(state, **{"params.answer_time": "1700000001000"}))
    assert event.call is not None
    assert (event.call.sequence_number, event.call.status, event.call.direction,
            event.call.endpoint) == (sequence, status, "inbound", "calling")
    assert event.call.timestamp == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)


@pytest.mark.parametrize("state", ["ending", "teleporting"])
def test_ending_and_unknown_states_are_no_call_status(state: str) -> None:
    event = parse_calling_event(calling_fields(state))
    assert event.call is None
    assert event.state == ("ending" if state == "ending" else "unknown")


def test_event_times_in_milliseconds_or_seconds() -> None:
    fields = calling_fields("ended", **{"params.end_reason": "hangup",
                                        "params.answer_time": "1700000010",
                                        "params.end_time": "1700000070500"})
    del fields["timestamp"]
    event = parse_calling_event(fields)
    assert event.call is not None
    assert event.call.call_duration == 60  # 60.5 s, rounded half to even
    assert event.call.timestamp == datetime(2023, 11, 14, 22, 14, 30, 500000, tzinfo=UTC)
    assert event.call.unanswered_status is None


def test_the_same_event_has_the_same_key_and_another_state_another() -> None:
    first = parse_calling_event(calling_fields("ringing"))
    retry = parse_calling_event({**calling_fields("ringing"), "timestamp": "1700000009"})
    assert first.key == retry.key  # de-duplicated on (call_id, call_state)
    assert parse_calling_event(calling_fields("answered")).key != first.key
    assert "c1" not in first.key and len(first.key) < 64


@pytest.mark.parametrize(("raw", "reason"), [
    ("hangup", "hangup"), ("noAnswer", "no_answer"), ("no-answer", "no_answer"),
    ("NO_ANSWER", "no_answer"), ("decline", "declined"), ("maxDuration", "max_duration"),
    ("notFound", "not_found"), ("cancelled", "cancel"), ("", "unknown"), (None, "unknown"),
    ("+15551234567", "unknown"),
])
def test_end_reasons_normalise_both_spellings(raw: str | None, reason: str) -> None:
    assert normalize_end_reason(raw) == reason


def test_calling_log_fields_hold_no_device_params() -> None:
    event = parse_calling_event(calling_fields("ended"))
    assert "+15551234567" not in repr(event.log_fields())


def test_json_message_callback_is_told_apart_by_shape_and_keeps_no_content() -> None:
    fields = {"id": "m1", "status": "Delivered", "project_id": "p", "to": "+18005559876",
              "from": "+15551234567", "body": "secret words", "number_of_segments": "3",
              "custom_variables.note": "more secret words", "error_code": "30003"}
    event = parse_message_event(fields)
    assert (event.sid, event.status, event.num_segments, event.error_code) \
        == ("m1", "delivered", 3, "30003")
    for text in ("secret", "+1555", "+1800"):
        assert text not in repr(event)
    # a form callback that also has an "id" field is still a form callback
    form = parse_message_event({"MessageSid": "m2", "MessageStatus": "sent", "id": "x"})
    assert form.sid == "m2"

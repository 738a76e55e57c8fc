"""Parse: raw callback bodies → field mappings → typed events.

Everything the provider sends is a string; this module is the one place that
turns those strings into numbers, datetimes and checked enum values, so no
later stage ever sees a raw payload. Only a missing or bad required field (the
id, the status) refuses a callback with a 400; a bad optional number is skipped
and named in the event's ``invalid_fields``, so one provider quirk never costs
the call its final status.
"""

from __future__ import annotations

import codecs
import email.parser
import email.policy
import functools
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from .errors import Rejected, invalid

CALL_STATUSES: tuple[str, ...] = (
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
    "unknown",
)
FINAL_CALL_STATUSES: frozenset[str] = frozenset(
    ("completed", "busy", "failed", "no-answer", "canceled")
)
# "outbound": SignalWire's JSON calling events (SWML, RELAY, Calling API) say only that.
DIRECTIONS: tuple[str, ...] = ("inbound", "outbound-api", "outbound-dial", "outbound", "unknown")

_STATUS_ALIASES = {"answered": "in-progress"}
_KNOWN_STATUSES = frozenset(CALL_STATUSES) - {"unknown"}
_KNOWN_DIRECTIONS = frozenset(DIRECTIONS) - {"unknown"}

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = "multipart/form-data"
CONTENT_TYPES = (FORM, JSON, MULTIPART)


# --- bodies → fields ---------------------------------------------------------------

def decode_pairs(content_type: str, body: bytes, *, max_fields: int,
                 raw_content_type: str = "") -> list[tuple[str, str]]:
    """Decode a callback body into (name, value) pairs, in body order.

    ``content_type`` is the bare media type; ``raw_content_type`` the full header
    (multipart needs its boundary parameter). Pairs, not a dict: the form
    signature covers every occurrence of a repeated name.
    """
    if content_type == FORM or (not body and content_type in ("", "application/octet-stream")):
        return _form_pairs(body, max_fields)
    if content_type == JSON:
        return _json_pairs(body, max_fields)
    if content_type == MULTIPART:
        return _multipart_pairs(body, raw_content_type, max_fields)
    raise Rejected(415, "unsupported",
                   f"unsupported content type {content_type[:60]!r}; send {FORM}, {JSON} "
                   f"or {MULTIPART}")


def decode_query(raw_query: str, *, max_fields: int) -> list[tuple[str, str]]:
    """Pairs of the provider's GET mode, where everything travels in the query string."""
    return _form_pairs(raw_query.encode("utf-8", "surrogateescape"), max_fields)


def collect_fields(pairs: list[tuple[str, str]], *, max_fields: int, max_field_length: int,
                   source_length: int | None = None) -> dict[str, str]:
    """Pairs → ``{name: value}`` within the limits; the first of repeated names wins.

    ``source_length``: the length of the form text the pairs were percent-decoded from,
    when there is one. Decoding only shortens, so a body within ``max_field_length`` holds
    no field over it, and the usual callback skips the check field by field.
    """
    if len(pairs) > max_fields:
        raise invalid(f"too many fields (limit {max_fields})")
    if source_length is not None and source_length <= max_field_length:
        unique = dict(pairs)
        if len(unique) == len(pairs):  # else a name is repeated: the first one wins, below
            return unique
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > max_field_length or len(name) > max_field_length:
            raise invalid(f"field {name[:64]!r} is longer than {max_field_length} characters")
        fields.setdefault(name, value)
    return fields


def _form_pairs(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    """``parse_qsl(keep_blank_values=True)``, exactly, at about half its cost.

    The hot path of every form callback. When no ``&`` or ``=`` is percent-encoded
    (the usual case), the whole body is decoded at once and then split; otherwise
    each name and value is decoded on its own, and only if it needs it.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("body is not valid UTF-8") from None
    if text.count("&") >= max_fields:
        raise invalid(f"too many fields (limit {max_fields})")
    try:
        if "%" not in text or not _ENCODED_SEPARATOR.search(text):
            return [piece.partition("=")[::2]
                    for piece in _unquote_plus_body(body, text).split("&") if piece]
        pairs: list[tuple[str, str]] = []
        for piece in text.split("&"):
            if piece:
                name, _, value = piece.partition("=")
                pairs.append((_unquote_plus(name), _unquote_plus(value)))
        return pairs
    except UnicodeDecodeError:
        raise invalid("form field is not valid UTF-8 after percent-decoding") from None


_ENCODED_SEPARATOR = re.compile("%(26|3[dD])")


def _unquote_plus_body(body: bytes, text: str) -> str:
    """The whole body percent- and plus-decoded: in C when it can be.

    ``%XX`` becomes ``\\xXX`` and the C escape decoder turns every one into its byte
    (3x quicker than the escape-by-escape loop); only for a body with no backslash of its
    own, and a broken escape (``%zz``, a bad UTF-8 sequence) takes the loop, which knows
    what ``parse_qsl`` does with it.
    """
    if "%" in text and "\\" not in text:
        try:
            raw = codecs.escape_decode(body.replace(b"+", b" ").replace(b"%", b"\\x"))[0]
            return raw.decode("utf-8")
        except ValueError:  # UnicodeDecodeError included: the loop raises it again
            pass
    return _unquote_plus(text)


def _unquote_plus(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    # The usual callback escapes only ASCII (":", "+", "/", "@"): look each escape up,
    # a third quicker than unquote's bytes round trip. Anything else goes to unquote.
    first, *escaped = text.split("%")
    try:
        return first + "".join([_ASCII_ESCAPES[piece[:2]] + piece[2:] for piece in escaped])
    except KeyError:  # non-ASCII (a UTF-8 sequence) or not a valid escape
        return unquote(text, errors="strict")


# "41", "4a", "4A" → "A": every ASCII escape, hex digits in either case, as unquote reads them.
_ASCII_ESCAPES = {f"{high}{low}": chr(int(high + low, 16))
                  for high in "01234567" for low in "0123456789abcdefABCDEF"}


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; every way it can be malformed is one 400."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, >4300-digit numbers
        raise invalid("body is not valid JSON") from None


def _json_pairs(body: bytes, max_fields: int) -> list[tuple[str, str]]:
    """A JSON object's fields; nested objects flattened to dotted names.

    ``{"params": {"call_id": "c1"}}`` gives ``("params.call_id", "c1")``: SignalWire's
    JSON callbacks (``calling.*`` events, the message callback's ``custom_variables``)
    nest their fields, and every processor reads flat names. Arrays carry nothing a
    metric uses and are skipped; null is absent.
    """
    document = decode_json(body)
    if not isinstance(document, dict):
        raise invalid("JSON body must be an object of callback fields")
    pairs: list[tuple[str, str]] = []
    # (prefix, object) still to flatten, kept in body order: an explicit stack, so a
    # deeply nested body costs no recursion
    pending: list[tuple[str, dict[str, Any]]] = [("", document)]
    while pending:
        prefix, node = pending.pop()
        nested: list[tuple[str, dict[str, Any]]] = []
        for key, value in node.items():
            name = prefix + key
            if isinstance(value, str):
                pairs.append((name, value))
            elif isinstance(value, bool):
                pairs.append((name, "true" if value else "false"))
            elif isinstance(value, int | float):
                pairs.append((name, repr(value)))
            elif isinstance(value, dict):
                nested.append((name + ".", value))
            if len(pairs) > max_fields:
                raise invalid(f"too many fields (limit {max_fields})")
        pending.extend(reversed(nested))
    return pairs


def _multipart_pairs(body: bytes, raw_content_type: str,
                     max_fields: int) -> list[tuple[str, str]]:
    if "boundary=" not in raw_content_type:
        raise invalid("multipart body without a boundary")
    head = f"Content-Type: {raw_content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise invalid("malformed multipart body")
    pairs: list[tuple[str, str]] = []
    for part in message.iter_parts():
        if len(pairs) >= max_fields:
            raise invalid(f"too many fields (limit {max_fields})")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise invalid("multipart part without a field name")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise invalid(f"field {name[:64]!r} is not a plain value")
        try:
            pairs.append((name, payload.decode("utf-8")))
        except UnicodeDecodeError:
            raise invalid(f"field {name[:64]!r} is not valid UTF-8") from None
    return pairs


# --- value converters ----------------------------------------------------------------

_MAX_INT = 2**53  # past this a float, which every metric value is, no longer holds a count


def plain_number(text: str) -> bool:
    """Could int()/float() read ``text`` as what the provider sends: ASCII digits only?

    Both also take ``1_000``, Arabic-Indic digits and the like; those are not a number a
    provider sends, so they are an invalid field. Two C calls, so the hot path stays quick.
    """
    return text.isascii() and "_" not in text


def _int(text: str) -> int:
    if not plain_number(text):
        raise ValueError("not an ASCII decimal number")
    value = int(text)  # int() and float() ignore surrounding whitespace themselves
    if not 0 <= value <= _MAX_INT:
        raise ValueError("negative or too large")
    return value


def _float(text: str) -> float:
    if not plain_number(text):
        raise ValueError("not an ASCII decimal number")
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("not a finite non-negative number")
    return value


_MONTH = re.compile(r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?",
                    re.IGNORECASE)
_WEEKDAY = re.compile(r"^\s*[A-Za-z]+\.?,?\s+(?=\d)")


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# What the provider sends nearly always: read it directly, 5x quicker than email.utils.
_CANONICAL = re.compile(r"(?:[A-Z][a-z]{2}, )?(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) "
                        r"(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


@functools.lru_cache(maxsize=256)
def parse_timestamp(text: str) -> datetime | None:
    """RFC 2822 → aware UTC datetime, or None if even the lenient reading fails.

    Tolerates what the provider really sends: ``-0000`` or no zone (taken as UTC),
    long or odd day and month names (``Thur``, ``Sept``). Cached: the value has
    one-second resolution, so under load many callbacks carry the same one.
    """
    canonical = _CANONICAL.fullmatch(text)
    if canonical and canonical[2] in _MONTHS:
        day, month, year, hour, minute, second, sign, off_h, off_m = canonical.groups()
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        try:
            moment = datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute),
                              int(second), tzinfo=UTC)
            return moment - offset if sign == "+" else moment + offset
        except (ValueError, OverflowError):
            pass  # out of range: the lenient reading decides
    cleaned = _MONTH.sub(lambda m: m.group(1).title(), _WEEKDAY.sub("", text.strip()))
    try:
        moment = parsedate_to_datetime(cleaned)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


# --- fields → typed events ---------------------------------------------------------------

@dataclass(slots=True)
class CallEvent:
    """One voice status callback, every field of seed 000, typed.

    ``status`` and ``direction`` are always members of CALL_STATUSES / DIRECTIONS:
    they become label values, so nothing else may reach them.
    """

    call_sid: str
    status: str
    direction: str
    endpoint: str
    raw_status: str = ""
    # the final status to record instead of ``status`` if the call was never answered
    unanswered_status: str | None = None
    # app/line label values (``slices``), when the config names any
    slice: tuple[str, ...] = ()
    # why a JSON calling event's call ended: a member of END_REASONS (None elsewhere)
    end_reason: str | None = None
    account_sid: str | None = None
    parent_call_sid: str | None = None
    from_: str | None = None
    to: str | None = None
    forwarded_from: str | None = None
    caller_name: str | None = None
    timestamp: datetime | None = None
    timestamp_invalid: bool = False
    sequence_number: int | None = None
    call_duration: int | None = None
    callback_source: str | None = None
    api_version: str | None = None
    sip_result_code: int | None = None
    sip_invite_result_phrase: str | None = None
    recording_url: str | None = None
    recording_sid: str | None = None
    recording_duration: int | None = None
    audio_in_mos: float | None = None
    audio_in_jitter_min_variance: float | None = None
    audio_in_jitter_max_variance: float | None = None
    audio_in_average_ptime: float | None = None
    audio_in_media_packet_count: int | None = None
    audio_out_media_packet_count: int | None = None
    audio_in_skip_packet_count: int | None = None
    audio_in_flush_packet_count: int | None = None
    audio_in_largest_jb_size: int | None = None
    audio_in_dtmf_packet_count: int | None = None
    audio_out_dtmf_packet_count: int | None = None
    # Names (from CALL_NUMBER_FIELDS) of optional fields given with a value that is not a
    # valid number for them: skipped, so counted in invalid_fields_total and left None.
    invalid_fields: tuple[str, ...] = ()

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_CALL_STATUSES

    @property
    def packet_loss_ratio(self) -> float | None:
        """Lost / expected inbound packets: our estimate, skip / (media + skip)."""
        media, skipped = self.audio_in_media_packet_count, self.audio_in_skip_packet_count
        if media is None or skipped is None or media + skipped == 0:
            return None
        return skipped / (media + skipped)


# (attribute, provider field, number type, lowest, highest): a value that is not an ASCII
# number within the range is an invalid field, skipped and named in the event. A range, not
# a converter function: int() and float() are called directly.
_FINITE = sys.float_info.max  # float("inf") and NaN fail "0 <= value <= _FINITE"
_Converter = Callable[[str], Any]
_TYPED_FIELDS: tuple[tuple[str, str, type[int] | type[float], float, float], ...] = (
    ("sequence_number", "SequenceNumber", int, 0, _MAX_INT),
    ("call_duration", "CallDuration", int, 0, _MAX_INT),
    ("sip_result_code", "SipResultCode", int, 100, 699),  # SIP response codes
    ("audio_in_mos", "AudioInMos", float, 0, 5),  # a 1-5 scale
    ("audio_in_jitter_min_variance", "AudioInJitterMinVariance", float, 0, _FINITE),
    ("audio_in_jitter_max_variance", "AudioInJitterMaxVariance", float, 0, _FINITE),
    ("audio_in_media_packet_count", "AudioInMediaPacketCount", int, 0, _MAX_INT),
    ("audio_in_skip_packet_count", "AudioInSkipPacketCount", int, 0, _MAX_INT),
    ("audio_in_flush_packet_count", "AudioInFlushPacketCount", int, 0, _MAX_INT),
    ("recording_duration", "RecordingDuration", int, 0, _MAX_INT),
    ("audio_in_average_ptime", "AudioInAveragePtime", float, 0, _FINITE),
    ("audio_out_media_packet_count", "AudioOutMediaPacketCount", int, 0, _MAX_INT),
    ("audio_in_largest_jb_size", "AudioInLargestJbSize", int, 0, _MAX_INT),
    ("audio_in_dtmf_packet_count", "AudioInDtmfPacketCount", int, 0, _MAX_INT),
    ("audio_out_dtmf_packet_count", "AudioOutDtmfPacketCount", int, 0, _MAX_INT),
)
# Every optional number of a call event: the `field` label values of invalid_fields_total.
CALL_NUMBER_FIELDS: tuple[str, ...] = tuple(name for _, name, *_ in _TYPED_FIELDS)
_TEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("account_sid", "AccountSid"),
    ("parent_call_sid", "ParentCallSid"),
    ("from_", "From"),
    ("to", "To"),
    ("forwarded_from", "ForwardedFrom"),
    ("caller_name", "CallerName"),
    ("callback_source", "CallbackSource"),
    ("api_version", "ApiVersion"),
    ("sip_invite_result_phrase", "SipInviteResultPhrase"),
    ("recording_url", "RecordingUrl"),
    ("recording_sid", "RecordingSid"),
)


def normalize_status(raw: str) -> str:
    status = raw.strip().lower()
    status = _STATUS_ALIASES.get(status, status)
    return status if status in _KNOWN_STATUSES else "unknown"


def normalize_direction(raw: str | None) -> str:
    if not raw:
        return "unknown"
    direction = raw.strip().lower()
    return direction if direction in _KNOWN_DIRECTIONS else "unknown"


def required(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise invalid(f"missing required field {name}")
    return value


MAX_SID_LENGTH = 256  # provider ids are 36-character UUIDs; a sid is a tracker key held for hours


def required_sid(fields: Mapping[str, str], name: str) -> str:
    """A required id field, short enough to be held as a tracker key for hours."""
    value = required(fields, name)
    if len(value) > MAX_SID_LENGTH:
        raise invalid(f"field {name} is longer than {MAX_SID_LENGTH} characters")
    return value


def parse_call_event(fields: Mapping[str, str], endpoint: str) -> CallEvent:
    """Typed event from decoded fields; ``endpoint`` is ``voice`` or ``inbound``.

    Inbound-number callbacks carry no Direction: they are inbound by definition.
    """
    call_sid = required_sid(fields, "CallSid")
    raw_status = required(fields, "CallStatus")
    direction = "inbound" if endpoint == "inbound" else normalize_direction(fields.get("Direction"))
    event = CallEvent(call_sid=call_sid, status=normalize_status(raw_status),
                      direction=direction, endpoint=endpoint, raw_status=raw_status)
    get = fields.get
    for attr, name in _TEXT_FIELDS:
        value = get(name)
        if value:
            setattr(event, attr, value)
    bad: list[str] | None = None
    for attr, name, number, lowest, highest in _TYPED_FIELDS:
        text = get(name)  # _optional, inlined: this loop runs 15 times per event
        if not text:
            continue
        try:  # plain_number, inlined; surrounding whitespace is allowed
            parsed: float | None = (number(text) if text.isascii() and "_" not in text
                                    else None)
        except ValueError:
            parsed = None
        if parsed is not None and lowest <= parsed <= highest:
            setattr(event, attr, parsed)
        elif not text.isspace():  # blank is absent, as everywhere
            if bad is None:
                bad = []
            bad.append(name)
    if bad is not None:
        event.invalid_fields = tuple(bad)
    event.timestamp, event.timestamp_invalid = _timestamp(fields)
    return event


def _timestamp(fields: Mapping[str, str]) -> tuple[datetime | None, bool]:
    """(Timestamp, whether one was given but unreadable): a bad one never costs the event."""
    stamp = fields.get("Timestamp")
    if not stamp or not stamp.strip():
        return None, False
    moment = parse_timestamp(stamp)
    return moment, moment is None


# --- messages, recordings, transcriptions ------------------------------------------------
# Label values again, so each list is closed with "unknown" for anything else.

MESSAGE_STATUSES: tuple[str, ...] = (
    "queued", "sending", "sent", "delivered", "undelivered", "failed",
    "receiving", "received", "read", "unknown",
)
FINAL_MESSAGE_STATUSES: frozenset[str] = frozenset(
    ("delivered", "undelivered", "failed", "received", "read"))
# Statuses that start the delivery-latency clock of an outbound message.
MESSAGE_SENDING_STATUSES: frozenset[str] = frozenset(("queued", "sending", "sent"))
MESSAGE_DIRECTIONS: tuple[str, ...] = (
    "inbound", "outbound-api", "outbound-call", "outbound-reply", "unknown",
)
RECORDING_STATUSES: tuple[str, ...] = ("in-progress", "completed", "absent", "failed", "unknown")
FINAL_RECORDING_STATUSES: frozenset[str] = frozenset(("completed", "absent", "failed"))
TRANSCRIPTION_STATUSES: tuple[str, ...] = ("completed", "failed", "unknown")
FINAL_TRANSCRIPTION_STATUSES: frozenset[str] = frozenset(("completed", "failed"))


# Messaging error codes worth telling apart (Twilio-compatible numbering, which the
# Compatibility API follows); any other code is "other", so the label stays bounded.
MESSAGE_ERROR_CODES: frozenset[str] = frozenset((
    "21211", "21408", "21610", "21612", "21614", "21617",
    *(str(code) for code in range(30001, 30013)),  # queue overflow … price exceeded
    *(str(code) for code in range(30017, 30025)),  # congestion, sender ID, size, 10DLC limits
    "30027", "30028", "30032", "30033", "30034", "30035", "30036", "30037", "30038",
))


def message_error_label(code: str) -> str:
    """Bounded label value for a raw ErrorCode."""
    code = code.strip()
    return code if code in MESSAGE_ERROR_CODES else "other"


def normalize(raw: str | None, known: tuple[str, ...]) -> str:
    """A provider value as a label: itself when in ``known``, else ``unknown``."""
    value = (raw or "").strip().lower()
    return value if value in known and value != "unknown" else "unknown"


def _optional(fields: Mapping[str, str], name: str, convert: _Converter,
              bad: list[str]) -> Any:
    """A typed optional field: None when absent or blank; a bad value's name goes to ``bad``."""
    text = fields.get(name)
    if text is None or not text.strip():
        return None
    try:
        return convert(text)
    except (ValueError, OverflowError):
        bad.append(name)
        return None


def _text(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    return value or None


@dataclass(slots=True)
class ItemStatus:
    """What every message, recording and transcription callback has.

    ``sid`` is the item's MessageSid, RecordingSid or TranscriptionSid; ``status``
    is always a member of that kind's status list (a label value).
    """

    sid: str
    status: str
    raw_status: str
    invalid_fields: tuple[str, ...] = ()  # optional numbers skipped as invalid, by name
    slice: tuple[str, ...] = ()  # app/line label values (``slices``), when configured


@dataclass(slots=True)
class MessageEvent(ItemStatus):
    """One SMS/MMS status callback, typed.

    ``Body`` is not kept at all, and ``error_message`` is free text: neither may
    reach a label or a log line. ``error_code`` is the raw code; the metrics map
    it onto a closed list.
    """

    direction: str = "unknown"
    account_sid: str | None = None
    from_: str | None = None
    to: str | None = None
    num_segments: int | None = None
    num_media: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    api_version: str | None = None

    def log_fields(self) -> dict[str, object]:
        """What may be logged: no numbers, no Body, no ErrorMessage."""
        return {"direction": self.direction, "segments": self.num_segments,
                "media": self.num_media,
                "error_code": message_error_label(self.error_code) if self.error_code else None}


@dataclass(slots=True)
class RecordingEvent(ItemStatus):
    """One recording status callback, typed."""

    call_sid: str | None = None
    account_sid: str | None = None
    recording_url: str | None = None
    duration: int | None = None
    channels: int | None = None
    source: str | None = None

    def log_fields(self) -> dict[str, object]:
        return {"call_sid": self.call_sid, "duration": self.duration,
                "channels": self.channels}


@dataclass(slots=True)
class TranscriptionEvent(ItemStatus):
    """One transcription callback; only the text's length is kept, never the text."""

    text_length: int | None = None
    recording_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    transcription_url: str | None = None

    def log_fields(self) -> dict[str, object]:
        """The text's length only: the text itself is free text."""
        return {"recording_sid": self.recording_sid, "text_length": self.text_length}


# The optional numbers of each item kind: invalid_fields_total's `field` values.
MESSAGE_NUMBER_FIELDS: tuple[str, ...] = ("NumSegments", "NumMedia", "number_of_segments")
RECORDING_NUMBER_FIELDS: tuple[str, ...] = ("RecordingDuration", "RecordingChannels")
CALLING_NUMBER_FIELDS: tuple[str, ...] = ("params.record.duration",)


def parse_message_event(fields: Mapping[str, str]) -> MessageEvent:
    """Typed SMS/MMS status; MessageSid and MessageStatus are required.

    SignalWire's JSON message callback (``id`` and ``status``, no MessageSid) is told
    apart by its shape and read by ``parse_json_message_event``.
    """
    if "MessageSid" not in fields and "id" in fields:
        return parse_json_message_event(fields)
    sid = required_sid(fields, "MessageSid")
    raw_status = required(fields, "MessageStatus")
    bad: list[str] = []
    return MessageEvent(
        sid=sid, status=normalize(raw_status, MESSAGE_STATUSES), raw_status=raw_status,
        direction=normalize(fields.get("Direction"), MESSAGE_DIRECTIONS),
        account_sid=_text(fields, "AccountSid"), from_=_text(fields, "From"),
        to=_text(fields, "To"),
        num_segments=_optional(fields, "NumSegments", _int, bad),
        num_media=_optional(fields, "NumMedia", _int, bad),
        error_code=_text(fields, "ErrorCode"), error_message=_text(fields, "ErrorMessage"),
        api_version=_text(fields, "ApiVersion"), invalid_fields=tuple(bad))


def parse_json_message_event(fields: Mapping[str, str]) -> MessageEvent:
    """The JSON message status callback (REST Messaging API, RELAY, SWML ``send_sms``).

    ``id`` and ``status`` are required. ``body``, ``custom_variables``, ``to`` and
    ``from`` are the sender's content and numbers: not read at all, so they are never
    stored, logged or labelled. ``error_code`` may come as a number.
    """
    sid = required_sid(fields, "id")
    raw_status = required(fields, "status")
    bad: list[str] = []
    return MessageEvent(
        sid=sid, status=normalize(raw_status, MESSAGE_STATUSES), raw_status=raw_status,
        direction=normalize(fields.get("direction"), MESSAGE_DIRECTIONS),
        account_sid=_text(fields, "project_id"),
        num_segments=_optional(fields, "number_of_segments", _int, bad),
        error_code=_text(fields, "error_code"), error_message=_text(fields, "error_message"),
        invalid_fields=tuple(bad))


def parse_recording_event(fields: Mapping[str, str]) -> RecordingEvent:
    """Typed recording status; RecordingSid and RecordingStatus are required."""
    sid = required_sid(fields, "RecordingSid")
    raw_status = required(fields, "RecordingStatus")
    bad: list[str] = []
    return RecordingEvent(
        sid=sid, status=normalize(raw_status, RECORDING_STATUSES),
        raw_status=raw_status, call_sid=_text(fields, "CallSid"),
        account_sid=_text(fields, "AccountSid"), recording_url=_text(fields, "RecordingUrl"),
        duration=_optional(fields, "RecordingDuration", _int, bad),
        channels=_optional(fields, "RecordingChannels", _int, bad),
        source=_text(fields, "RecordingSource"), invalid_fields=tuple(bad))


def parse_transcription_event(fields: Mapping[str, str]) -> TranscriptionEvent:
    """Typed transcription; TranscriptionSid and TranscriptionStatus are required.

    An empty ``TranscriptionText`` is a length of 0 (silence), not a missing one.
    """
    sid = required_sid(fields, "TranscriptionSid")
    raw_status = required(fields, "TranscriptionStatus")
    text = fields.get("TranscriptionText")
    return TranscriptionEvent(
        sid=sid, status=normalize(raw_status, TRANSCRIPTION_STATUSES),
        raw_status=raw_status, text_length=None if text is None else len(text),
        recording_sid=_text(fields, "RecordingSid"), call_sid=_text(fields, "CallSid"),
        account_sid=_text(fields, "AccountSid"),
        transcription_url=_text(fields, "TranscriptionUrl"))


# --- SignalWire's JSON calling events (SWML, RELAY, the Calling API) ----------------------
# Reference §6.1-6.2. The body's nested fields arrive flattened (``params.call_id``). Each
# event type has its own closed list of states (label values), anything else is "unknown".

CALL_STATE_EVENT = "calling.call.state"
CALLING_EVENT_STATES: dict[str, tuple[str, ...]] = {
    CALL_STATE_EVENT: ("queued", "created", "initiated", "ringing", "answered", "ending",
                       "ended", "unknown"),
    "calling.call.connect": ("connecting", "connected", "failed", "disconnected", "unknown"),
    "calling.call.record": ("recording", "paused", "finished", "no_input", "error", "unknown"),
    "calling.call.stream": ("streaming", "finished", "unknown"),
    "calling.transcript.completed": ("completed",),  # the state is the event type's suffix
    "calling.transcript.failed": ("failed",),
    "unknown": ("unknown",),
}
CALLING_EVENT_TYPES: tuple[str, ...] = tuple(CALLING_EVENT_STATES)

# Why a call ended (``params.end_reason``): SWML's and RELAY's spellings, normalised.
END_REASONS: tuple[str, ...] = ("hangup", "busy", "no_answer", "cancel", "declined", "error",
                                "abandoned", "max_duration", "not_found", "unknown")
_END_REASON_ALIASES = {"noanswer": "no_answer", "decline": "declined",
                       "maxduration": "max_duration", "notfound": "not_found",
                       "canceled": "cancel", "cancelled": "cancel"}

# call_state → (its position in a call's life, the CallStatus it means). The position is
# the CallEvent's sequence number: the call tracker then de-duplicates on (call_id,
# call_state) and orders events by state, as it does with SequenceNumber. ``ending``
# (the hangup under way) and unknown states are no CallStatus: counted as events only.
_CALL_STATES: dict[str, tuple[int, str]] = {
    "queued": (0, "queued"), "created": (1, "initiated"), "initiated": (1, "initiated"),
    "ringing": (2, "ringing"), "answered": (3, "in-progress"), "ended": (5, "completed"),
}
# ended: the final status an end reason means whether or not the call was answered...
_END_STATUS = {"busy": "busy", "no_answer": "no-answer", "cancel": "canceled",
               "declined": "busy", "error": "failed", "not_found": "failed"}
# ... else ``completed`` if answered, and if never answered (no ``answered`` event, no
# ``answer_time``) this instead: a hangup before the answer is a cancel, like the
# Compatibility API's; an unknown reason on an unanswered call is a failure.
_UNANSWERED_END = {"hangup": "canceled", "abandoned": "canceled", "max_duration": "canceled"}

# calling.call.record state → recording status; ``paused`` is none (counted as an event only)
_RECORD_STATUSES = {"recording": "in-progress", "finished": "completed", "no_input": "absent",
                    "error": "failed", "unknown": "unknown"}

_MS_EPOCH = 1e11  # a time past this is in milliseconds (1e11 seconds is the year 5138)


def normalize_end_reason(raw: str | None) -> str:
    """``noAnswer``, ``no_answer``, ``no-answer`` → ``no_answer``; anything new → unknown."""
    reason = (raw or "").strip().lower().replace("-", "_")
    if reason in END_REASONS:
        return reason
    return _END_REASON_ALIASES.get(reason.replace("_", ""), "unknown")


def _epoch(text: str) -> datetime:
    """Seconds (``timestamp``) or milliseconds (``start_time``…) since the epoch → UTC."""
    value = _float(text)
    return datetime.fromtimestamp(value / 1000 if value > _MS_EPOCH else value, UTC)


def _epoch_field(fields: Mapping[str, str], name: str) -> datetime | None:
    """An event time the metrics use: absent (or 0, RELAY's "not yet") is None; bad is a 400."""
    text = fields.get(name)
    if not text or not text.strip() or text.strip() in ("0", "0.0"):
        return None
    try:
        return _epoch(text)
    except (ValueError, OverflowError, OSError):
        raise invalid(f"field {name} has an invalid value") from None


def _event_time(fields: Mapping[str, str]) -> tuple[datetime | None, bool]:
    """(top-level ``timestamp``, whether one was given but unreadable), like ``_timestamp``."""
    text = fields.get("timestamp")
    if not text or not text.strip():
        return None, False
    try:
        return _epoch(text), False
    except (ValueError, OverflowError, OSError):
        return None, True


def _short_id(fields: Mapping[str, str], name: str) -> str | None:
    value = _text(fields, name)
    if value is not None and len(value) > MAX_SID_LENGTH:
        raise invalid(f"field {name} is longer than {MAX_SID_LENGTH} characters")
    return value


def event_key(kind: str, *parts: str | None) -> str:
    """A fixed-size key for ``Store.count_once``: what a retry of one event shares with it."""
    digest = hashlib.blake2b("\x1f".join(part or "" for part in parts).encode("utf-8",
                             "surrogatepass"), digest_size=16).hexdigest()
    return f"{kind}:{digest}"


@dataclass(slots=True)
class CallingEvent:
    """One JSON ``calling.*`` event: its bounded labels, and what it feeds.

    ``call`` is set for a call-state event with a CallStatus (the call tracker's input),
    ``item`` for a record or transcript event (the recording or transcription
    tracker's); ``key`` de-duplicates the event itself (``Store.count_once``).
    """

    event_type: str
    state: str
    key: str
    call_id: str | None
    call: CallEvent | None = None
    item: RecordingEvent | TranscriptionEvent | None = None
    invalid_fields: tuple[str, ...] = ()  # optional numbers skipped as invalid, by name
    slice: tuple[str, ...] = ()  # app/line label values (``slices``), when configured

    def log_fields(self) -> dict[str, object]:
        """Labels and ids only: ``device`` (phone numbers, SIP URIs) is never logged."""
        fields: dict[str, object] = {"event_type": self.event_type, "state": self.state,
                                     "call_id": self.call_id}
        if self.call is not None:
            fields.update(status=self.call.status, end_reason=self.call.end_reason,
                          timestamp=self.call.timestamp.isoformat()
                          if self.call.timestamp else None)
        if self.item is not None:
            fields.update(item_sid=self.item.sid, item_status=self.item.status)
        return fields


def parse_calling_event(fields: Mapping[str, str]) -> CallingEvent:
    """Typed ``calling.*`` event; a call-state event needs ``call_id`` and ``call_state``.

    Any other event is accepted with whatever it carries: an unknown ``event_type`` or
    state is counted as ``unknown``, never refused.
    """
    raw_type = fields.get("event_type", "").strip()
    if not raw_type and "params.call_state" in fields:
        raw_type = CALL_STATE_EVENT  # the Calling API's status_url body may omit it
    if not raw_type:
        raise invalid("missing required field event_type")
    event_type = raw_type.lower() if raw_type.lower() in CALLING_EVENT_STATES else "unknown"
    if event_type == CALL_STATE_EVENT:
        call_id: str | None = required_sid(fields, "params.call_id")
        raw_state = required(fields, "params.call_state")
    else:
        call_id = _short_id(fields, "params.call_id")
        raw_state = (event_type.rpartition(".")[2] if event_type.startswith("calling.transcript")
                     else fields.get("params.connect_state") or fields.get("params.state", ""))
    state = normalize(raw_state, CALLING_EVENT_STATES[event_type])
    control_id = _short_id(fields, "params.control_id")
    if event_type == CALL_STATE_EVENT:
        # de-duplicated on (call_id, call_state), the order the issue and the tracker keep
        key = event_key("calling", event_type, call_id, raw_state.lower())
    else:
        key = event_key("calling", raw_type, call_id, control_id, raw_state,
                        fields.get("timestamp"))
    event = CallingEvent(event_type=event_type, state=state, key=key, call_id=call_id)
    if event_type == CALL_STATE_EVENT and state in _CALL_STATES:
        event.call = _call_state_event(fields, call_id or "", state, raw_state)
    elif event_type == "calling.call.record" and state in _RECORD_STATUSES:
        sid = control_id or call_id
        if sid is not None:
            bad: list[str] = []
            duration = _optional(fields, "params.record.duration", _float, bad)
            event.invalid_fields = tuple(bad)
            event.item = RecordingEvent(
                sid=sid, status=_RECORD_STATUSES[state], raw_status=raw_state,
                call_sid=call_id, account_sid=_text(fields, "project_id"),
                recording_url=_text(fields, "params.record.url"),
                duration=None if duration is None else round(duration))
    elif event_type.startswith("calling.transcript."):
        sid = control_id or call_id
        if sid is not None:
            text = fields.get("params.text")
            event.item = TranscriptionEvent(
                sid=sid, status=state, raw_status=raw_state,
                text_length=None if text is None else len(text), call_sid=call_id,
                account_sid=_text(fields, "project_id"))
    return event


def _call_state_event(fields: Mapping[str, str], call_id: str, state: str,
                      raw_state: str) -> CallEvent:
    """The call-state event as the CallEvent the call tracker already knows (see _CALL_STATES)."""
    sequence, status = _CALL_STATES[state]
    get = fields.get
    event = CallEvent(call_sid=call_id, status=status, endpoint="calling", raw_status=raw_state,
                      direction=normalize_direction(get("params.direction")),
                      sequence_number=sequence, account_sid=_text(fields, "project_id"),
                      parent_call_sid=_text(fields, "params.parent.call_id"),
                      from_=_text(fields, "params.device.params.from_number")
                      or _text(fields, "params.device.params.from"),
                      to=_text(fields, "params.device.params.to_number")
                      or _text(fields, "params.device.params.to"))
    event.timestamp, event.timestamp_invalid = _event_time(fields)
    own_time = {"queued": "params.start_time", "created": "params.start_time",
                "initiated": "params.start_time", "answered": "params.answer_time",
                "ended": "params.end_time"}.get(state)
    if event.timestamp is None and own_time is not None:
        event.timestamp = _epoch_field(fields, own_time)
    if state == "ended":
        reason = event.end_reason = normalize_end_reason(get("params.end_reason"))
        answered = _epoch_field(fields, "params.answer_time")
        ended = _epoch_field(fields, "params.end_time")
        if reason in _END_STATUS:
            event.status = _END_STATUS[reason]
        elif answered is None:
            event.unanswered_status = _UNANSWERED_END.get(reason, "failed")
        if answered is not None and ended is not None and ended >= answered:
            event.call_duration = round((ended - answered).total_seconds())
    return event


# --- 10DLC status callbacks (brand, campaign and number-assignment state) -----------------
# Reference §6.4; no example body is published, only the field list.

TEN_DLC_CATEGORIES: tuple[str, ...] = (
    "brand", "campaign", "number_assignment_order", "number_assignment", "unknown")
TEN_DLC_EVENT_TYPES: tuple[str, ...] = (
    "brand_activated", "brand_unverified", "campaign_activated", "campaign_deactivated",
    "number_assignment_order_processed", "number_assignment_failed",
    "number_assignment_pending", "number_assignment_activated", "unknown")
# the ids that name what an event is about; with the type, state and time, they make its key
_TEN_DLC_IDS = ("brand_id", "campaign_id", "number_assignment_order_id",
                "number_assignment_id", "phone_number_id")


@dataclass(slots=True)
class TenDlcEvent:
    """One 10DLC status callback: its two labels, and what a retry of it shares (``key``).

    ``phone_number`` (the sender's number) is not read at all.
    """

    category: str
    event_type: str
    key: str
    ids: dict[str, str]

    def log_fields(self) -> dict[str, object]:
        return {"category": self.category, "event_type": self.event_type, **self.ids}


def parse_ten_dlc_event(fields: Mapping[str, str]) -> TenDlcEvent:
    """Typed 10DLC event; ``event_type`` (what happened) is required, nothing else.

    A retry is the same (category, type, state, ``event_at``, ids): the key de-duplicates
    on all of them, so two real events differ in at least their time.
    """
    raw_type = required(fields, "event_type")
    ids = {name: value for name in _TEN_DLC_IDS if (value := _short_id(fields, name))}
    raw_category = fields.get("event_category", "")
    key = event_key("10dlc", raw_category.strip().lower(), raw_type.lower(),
                    fields.get("state", "").strip().lower(), fields.get("event_at", "").strip(),
                    *(ids.get(name) for name in _TEN_DLC_IDS))
    return TenDlcEvent(category=normalize(raw_category, TEN_DLC_CATEGORIES),
                       event_type=normalize(raw_type, TEN_DLC_EVENT_TYPES), key=key, ids=ids)

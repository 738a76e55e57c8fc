"""Generate signature_vectors.json with the provider's official validators.

Run once by hand (not in CI); it needs network access to PyPI:

    python3 tests/vectors/make_signature_vectors.py

It creates throwaway virtualenvs (one per SDK: the packages clash, since both
SignalWire SDKs install a top-level ``signalwire`` package), lets one SDK *sign*
each case, then asks every SDK to *validate* every case, and writes the
signatures and each SDK's verdict to JSON. tests/test_signature.py loads that
file, so CI needs none of the SDKs.

``expected`` is this exporter's verdict; ``differs`` names the SDKs that
knowingly disagree, with the reason (docs/security.md explains each choice).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "signature_vectors.json"

SDKS = {
    # name: pip requirement
    "twilio9": "twilio==9.13.0",
    "twilio6": "twilio==6.54.0",
    "signalwire2": "signalwire==2.1.1",
    "signalwire_sdk": "signalwire-sdk==3.7.5",
}

KEY = "PSK_vector_key_7f3a9c"
OTHER_KEY = "PSK_some_other_project"
HOST = "https://metrics.example.com"
VOICE = f"{HOST}/callbacks/voice"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
CALL = "CallSid=3f2a8c1e-0000-4000-8000-000000000001&CallStatus=completed"
JSON_BODY = ('{"CallSid": "3f2a8c1e-0000-4000-8000-000000000001", '
             '"CallStatus": "completed", "CallerName": "Jos\u00e9"}')

CALLING = f"{HOST}/callbacks/calling"
CALLING_BODY = ('{"event_type": "calling.call.state", "event_channel": "swml:8c1e", '
                '"timestamp": 1700000072.412, '
                '"project_id": "b6b5d0d3-0000-4000-8000-00000000aaaa", "space_id": "space-1", '
                '"params": {"call_id": "3f2a8c1e-0000-4000-8000-000000000002", '
                '"node_id": "node-1", "call_state": "ended", "direction": "outbound", '
                '"device": {"type": "phone", "params": {"from_number": "+15551234567", '
                '"to_number": "+15557654321"}}, "end_reason": "hangup", '
                '"start_time": 1700000000000, "answer_time": 1700000007000, '
                '"end_time": 1700000072412}}')
MESSAGE_BODY = ('{"id": "6a0e2f3b-0000-4000-8000-000000000003", '
                '"project_id": "b6b5d0d3-0000-4000-8000-00000000aaaa", "status": "delivered", '
                '"to": "+15557654321", "from": "+15551234567", "body": "Caf\u00e9 at 5?", '
                '"number_of_segments": 1, "timestamp": "2026-11-30T17:05:04Z", '
                '"error_code": null, "error_message": null, "custom_variables": {"order": "42"}}')
TEN_DLC_BODY = ('{"project_id": "b6b5d0d3-0000-4000-8000-00000000aaaa", '
                '"event_at": "2026-11-30T16:00:00Z", "event_category": "campaign", '
                '"event_type": "campaign_deactivated", "state": "inactive", '
                '"brand_id": "4f8c2a10-0000-4000-8000-0000000000b1", '
                '"campaign_id": "0a1b2c3d-0000-4000-8000-0000000000c1"}')
HEX1_ONLY = {"twilio9": "not implemented", "twilio6": "not implemented"}
HEX256_ONLY = {**HEX1_ONLY, "signalwire2": "not implemented"}

BARE_URL = "bare-URL signature over a form body: signs none of the body (reference 3.4)"
SDK_DEFAULT_PORT_ONLY = ("signalwire-sdk tries only the default port; twilio and signalwire 2.x "
                         "also accept the URL with any port removed, and so do we")
HEX_PORTS = ("signalwire 2.x tries port variants for the hex scheme too; "
             "a default port changes nothing about the target, so we accept it")
TWILIO_REPEATS = "twilio 9 sorts and de-duplicates repeated values"
SDK_REPEATS = "signalwire-sdk keeps repeated values in body order"


def case(name: str, *, url: str = VOICE, body: str = "", content_type: str = FORM,
         method: str = "POST", scheme: str = "form", signer: str = "signalwire_sdk",
         sign_url: str | None = None, sign_body: str | None = None,
         sign_key: str = KEY, header: str = "X-SignalWire-Signature",
         mutate: str | None = None, expected: bool = True,
         differs: dict[str, str] | None = None) -> dict[str, Any]:
    """One request: what was signed (sign_*) and what arrives (url, body)."""
    return {
        "name": name, "method": method, "url": url, "body": body,
        "content_type": content_type if method == "POST" else "",
        "scheme": scheme, "signer": signer,
        "sign_url": sign_url if sign_url is not None else url,
        "sign_body": sign_body if sign_body is not None else body,
        "sign_key": sign_key, "header": header, "mutate": mutate,
        "expected": expected, "differs": differs or {},
    }


def cases() -> list[dict[str, Any]]:
    sha = "__BODY_SHA256__"  # replaced by the signer with the body's real hash
    return [
        # --- Compatibility form scheme (reference 3.1)
        case("form: a typical status callback",
             body=CALL + "&Direction=outbound-api&From=%2B15551234567&To=%2B15557654321"
                  "&Timestamp=Thu%2C+09+Nov+2023+17%3A05%3A04+%2B0000&SequenceNumber=3"),
        case("form: unicode values", body="CallerName=Jos%C3%A9+M%C3%BCller+%E6%97%A5%E6%9C%AC&"
             + CALL),
        case("form: '+' and %20 both decode to a space",
             body=CALL + "&CallerName=Ada+Lovelace%20Byron&Note=a%2Bb"),
        case("form: empty values keep their names",
             body=CALL + "&ForwardedFrom=&CallerName=&ParentCallSid="),
        case("form: names sort by code point (To before a)",
             body="to=1&To=2&a=3&B=4&" + CALL),
        case("form: repeated name, distinct values in sorted order",
             body=CALL + "&Tag=alpha&Tag=beta", signer="twilio9",
             ),
        case("form: repeated name, values in body order (signalwire-sdk signs)",
             body=CALL + "&Tag=beta&Tag=alpha",
             differs={"twilio9": TWILIO_REPEATS}),
        case("form: repeated name, values sorted (twilio 9 signs)",
             body=CALL + "&Tag=beta&Tag=alpha", signer="twilio9",
             differs={"signalwire_sdk": SDK_REPEATS}),
        case("form: repeated identical values (twilio 9 signs once)",
             body=CALL + "&Tag=same&Tag=same", signer="twilio9",
             differs={"signalwire_sdk": SDK_REPEATS}),
        case("form: query string signed as received",
             url=VOICE + "?tenant=acme&note=a%20b&x=1", body=CALL),
        case("form: empty body", body=""),
        case("form: legacy X-Twilio-Signature header", body=CALL,
             header="X-Twilio-Signature"),
        # --- default port variants (reference 3.1.5)
        case("port: signed with :443, received without", body=CALL,
             sign_url="https://metrics.example.com:443/callbacks/voice"),
        case("port: signed without :443, received with", body=CALL,
             url="https://metrics.example.com:443/callbacks/voice", sign_url=VOICE),
        case("port: http signed with :80, received without", body=CALL,
             url="http://metrics.example.com/callbacks/voice",
             sign_url="http://metrics.example.com:80/callbacks/voice"),
        case("port: non-default port kept", body=CALL,
             url="https://metrics.example.com:8443/callbacks/voice"),
        case("port: non-default port dropped from the signed URL", body=CALL,
             url="https://metrics.example.com:8443/callbacks/voice", sign_url=VOICE,
             differs={"signalwire_sdk": SDK_DEFAULT_PORT_ONLY}),
        case("port: non-default port dropped, GET mode", method="GET",
             url="https://metrics.example.com:8443/callbacks/voice?CallSid=3f2a8c1e"
                 "&CallStatus=ringing",
             sign_url=VOICE + "?CallSid=3f2a8c1e&CallStatus=ringing",
             differs={"signalwire_sdk": SDK_DEFAULT_PORT_ONLY}),
        case("port: received on a non-default port, signed with the default one", body=CALL,
             url="https://metrics.example.com:8443/callbacks/voice",
             sign_url="https://metrics.example.com:443/callbacks/voice", expected=False),
        case("port: received without a port, signed with a non-default one", body=CALL,
             sign_url="https://metrics.example.com:8443/callbacks/voice", expected=False),
        case("port: another non-default port", body=CALL,
             url="https://metrics.example.com:8443/callbacks/voice",
             sign_url="https://metrics.example.com:9443/callbacks/voice", expected=False),
        case("port: http and https are not interchangeable", body=CALL,
             sign_url="http://metrics.example.com/callbacks/voice", expected=False),
        # --- GET mode (reference 3.1.6)
        case("get: fields in the query, signature over the URL", method="GET",
             url=VOICE + "?CallSid=3f2a8c1e&CallStatus=ringing&CallerName=Jos%C3%A9"),
        case("get: :443 variant", method="GET",
             url=VOICE + "?CallSid=3f2a8c1e&CallStatus=ringing",
             sign_url="https://metrics.example.com:443/callbacks/voice"
                      "?CallSid=3f2a8c1e&CallStatus=ringing"),
        # --- JSON with bodySHA256 (reference 3.2)
        case("bodySHA256: JSON body, URL-only signature", scheme="bodysha",
             signer="twilio9", url=VOICE + "?bodySHA256=" + sha, body=JSON_BODY,
             content_type=JSON_TYPE, differs={"signalwire2": "not implemented"}),
        case("bodySHA256: with a query before it", scheme="bodysha", signer="twilio9",
             url=VOICE + "?tenant=acme&bodySHA256=" + sha, body=JSON_BODY,
             content_type=JSON_TYPE, differs={"signalwire2": "not implemented"}),
        case("bodySHA256: :443 variant", scheme="bodysha", signer="twilio9",
             url=VOICE + "?bodySHA256=" + sha, body=JSON_BODY, content_type=JSON_TYPE,
             sign_url="https://metrics.example.com:443/callbacks/voice?bodySHA256=" + sha,
             differs={"signalwire2": "not implemented"}),
        case("bodySHA256: body changed after signing", scheme="bodysha", signer="twilio9",
             url=VOICE + "?bodySHA256=" + sha, sign_body=JSON_BODY,
             body=JSON_BODY.replace("completed", "failed"), content_type=JSON_TYPE,
             expected=False),
        # --- SignalWire hex scheme (reference 3.3)
        case("hex sha1: JSON body", scheme="hex1", body=JSON_BODY, content_type=JSON_TYPE,
             differs={"twilio9": "not implemented", "twilio6": "not implemented"}),
        case("hex sha1: form body", scheme="hex1", body=CALL,
             differs={"twilio9": "not implemented", "twilio6": "not implemented"}),
        case("hex sha1: signed with :443, received without", scheme="hex1",
             body=JSON_BODY, content_type=JSON_TYPE,
             sign_url="https://metrics.example.com:443/callbacks/voice",
             differs={"signalwire_sdk": HEX_PORTS, "twilio9": "not implemented",
                      "twilio6": "not implemented"}),
        case("hex sha256: JSON body in X-SignalWire-Sha256-Signature", scheme="hex256",
             body=JSON_BODY, content_type=JSON_TYPE,
             header="X-SignalWire-Sha256-Signature",
             differs={"twilio9": "not implemented", "twilio6": "not implemented",
                      "signalwire2": "not implemented"}),
        case("hex sha256: form body", scheme="hex256", body=CALL,
             header="X-SignalWire-Sha256-Signature",
             differs={"twilio9": "not implemented", "twilio6": "not implemented",
                      "signalwire2": "not implemented"}),
        case("hex sha1: body changed after signing", scheme="hex1", sign_body=JSON_BODY,
             body=JSON_BODY.replace("completed", "failed"), content_type=JSON_TYPE,
             expected=False),
        case("hex sha1: upper-case hex", scheme="hex1", body=JSON_BODY,
             content_type=JSON_TYPE, mutate="upper", expected=False),
        case("hex sha256: body changed after signing", scheme="hex256",
             sign_body=JSON_BODY, body=JSON_BODY.replace("completed", "failed"),
             content_type=JSON_TYPE, header="X-SignalWire-Sha256-Signature",
             expected=False),
        # --- SignalWire's JSON products on their endpoints (reference 6.5)
        case("hex sha1: calling.call.state event on /callbacks/calling", scheme="hex1",
             url=CALLING, body=CALLING_BODY, content_type=JSON_TYPE, differs=HEX1_ONLY),
        case("hex sha256: calling.call.state event on /callbacks/calling", scheme="hex256",
             url=CALLING, body=CALLING_BODY, content_type=JSON_TYPE,
             header="X-SignalWire-Sha256-Signature", differs=HEX256_ONLY),
        case("hex sha1: JSON message status callback on /callbacks/messaging", scheme="hex1",
             url=f"{HOST}/callbacks/messaging", body=MESSAGE_BODY, content_type=JSON_TYPE,
             differs=HEX1_ONLY),
        case("hex sha1: 10DLC status callback on /callbacks/10dlc", scheme="hex1",
             url=f"{HOST}/callbacks/10dlc", body=TEN_DLC_BODY, content_type=JSON_TYPE,
             differs=HEX1_ONLY),
        case("hex sha256: 10DLC status callback on /callbacks/10dlc", scheme="hex256",
             url=f"{HOST}/callbacks/10dlc", body=TEN_DLC_BODY, content_type=JSON_TYPE,
             header="X-SignalWire-Sha256-Signature", differs=HEX256_ONLY),
        case("negative: calling event signed for another endpoint (10dlc)", scheme="hex1",
             url=CALLING, sign_url=f"{HOST}/callbacks/10dlc", body=CALLING_BODY,
             content_type=JSON_TYPE, expected=False),
        case("negative: calling event changed after signing", scheme="hex1", url=CALLING,
             sign_body=CALLING_BODY, body=CALLING_BODY.replace("hangup", "busy"),
             content_type=JSON_TYPE, expected=False),
        # --- negatives (reference 3.4)
        case("negative: signed for another endpoint", body=CALL,
             sign_url=f"{HOST}/callbacks/inbound", expected=False),
        case("negative: signed for another tenant query", body=CALL,
             url=VOICE + "?tenant=victim", sign_url=VOICE + "?tenant=attacker",
             expected=False),
        case("negative: another project's key", body=CALL, sign_key=OTHER_KEY,
             expected=False),
        case("negative: truncated signature", body=CALL, mutate="truncate",
             expected=False),
        case("negative: empty signature header", body=CALL, mutate="empty",
             expected=False),
        case("negative: a field changed after signing", body=CALL,
             sign_body=CALL.replace("completed", "failed"), expected=False),
        case("negative: a field added after signing", body=CALL + "&Direction=inbound",
             sign_body=CALL, expected=False),
        case("negative: bare-URL signature over a form body", body=CALL, sign_body="",
             expected=False, differs={"signalwire_sdk": BARE_URL}),
        case("negative: URL-only signature over a JSON body without bodySHA256",
             body=JSON_BODY, content_type=JSON_TYPE, scheme="bodysha", sign_body="",
             expected=False, differs={"signalwire_sdk": BARE_URL}),
        case("bodySHA256: form body vouched for by the hash", scheme="bodysha",
             signer="twilio9", url=VOICE + "?bodySHA256=" + sha, body=CALL,
             differs={"twilio9": "twilio is handed the parsed form, so it signs the fields",
                      "twilio6": "twilio is handed the parsed form, so it signs the fields",
                      "signalwire2": "not implemented"}),
        case("negative: GET query changed after signing", method="GET",
             url=VOICE + "?CallSid=3f2a8c1e&CallStatus=failed",
             sign_url=VOICE + "?CallSid=3f2a8c1e&CallStatus=completed", expected=False),
    ]


# --- worker: runs inside one SDK's virtualenv ----------------------------------------

class _MultiDict(dict):  # type: ignore[type-arg]
    """What Flask hands the validator: every value of a repeated name via getall()."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._pairs = pairs
        for name, value in pairs:
            self.setdefault(name, value)

    def getall(self, name: str) -> list[str]:
        return [v for n, v in self._pairs if n == name]


def _sign(sdk: str, c: dict[str, Any]) -> str:
    from urllib.parse import parse_qsl

    key, url, body = c["sign_key"], c["sign_url"], c["sign_body"]
    if c["scheme"] in ("form", "bodysha"):
        pairs = [] if c["scheme"] == "bodysha" else parse_qsl(body, keep_blank_values=True)
        if sdk == "twilio9":
            from twilio.request_validator import RequestValidator
            return str(RequestValidator(key).compute_signature(url, _MultiDict(pairs)))
        from signalwire.core.security import webhook_validator as v
        return str(v._b64_hmac_sha1(key, url + v._sorted_concat_params(pairs)))
    if sdk == "signalwire_sdk":
        from signalwire.core.security import webhook_validator as v
        digest = v._hex_hmac_sha1 if c["scheme"] == "hex1" else v._hex_hmac_sha256
        return str(digest(key, url + body))
    raise SystemExit(f"{sdk} cannot sign {c['scheme']} ({c['name']})")


def _validate(sdk: str, c: dict[str, Any]) -> bool | None:
    """The SDK's verdict, calling it the way its docs tell a web app to."""
    from urllib.parse import parse_qsl

    key, url, body, sig = KEY, c["url"], c["body"], c["signature"]
    headers = {c["header"].lower(): sig}  # the SDK looks names up in lower case
    is_json = c["content_type"] == JSON_TYPE
    pairs = [] if c["method"] == "GET" or is_json else parse_qsl(body, keep_blank_values=True)
    if sdk in ("twilio6", "signalwire2") and len({n for n, _ in pairs}) < len(pairs):
        return None  # they take a plain dict: one value per name, so no verdict
    if sdk in ("twilio9", "twilio6"):
        if c["scheme"] in ("hex1", "hex256"):
            return None
        from twilio.request_validator import RequestValidator
        params: Any = body if is_json else (_MultiDict(pairs) if sdk == "twilio9"
                                            else dict(pairs))
        try:
            return bool(RequestValidator(key).validate(url, params, sig))
        except (TypeError, AttributeError):  # twilio on a JSON body without bodySHA256
            return False
    if sdk == "signalwire2":
        if c["scheme"] in ("hex256", "bodysha"):
            return None
        from signalwire.request_validator import RequestValidator as SW2
        raw = c["scheme"] == "hex1" or is_json
        try:
            return bool(SW2(key).validate(url, body if raw else dict(pairs), sig))
        except TypeError:  # a nested JSON body that fails the hex check crashes its fallback
            return False
    from signalwire.core.security.webhook_middleware import validate
    return validate(c["method"], url, headers, body, signing_key=key) is None


def worker(sdk: str, phase: str, path: Path) -> None:
    import hashlib

    data = json.loads(path.read_text())
    for c in data:
        if phase == "sign" and c["signer"] == sdk:
            digest = hashlib.sha256(c["sign_body"].encode()).hexdigest()
            c["sign_url"] = c["sign_url"].replace("__BODY_SHA256__", digest)
            c["url"] = c["url"].replace("__BODY_SHA256__", digest)
            signature = _sign(sdk, c)
            c["signature"] = {"truncate": signature[:-1], "empty": "",
                              "upper": signature.upper()}.get(c["mutate"] or "", signature)
        elif phase == "validate":
            c.setdefault("sdk", {})[sdk] = _validate(sdk, c)
    path.write_text(json.dumps(data))


# --- orchestrator ------------------------------------------------------------------------

def make_venvs(root: Path) -> dict[str, Path]:
    pythons = {}
    for sdk, requirement in SDKS.items():
        env = root / sdk
        venv.create(env, with_pip=True)
        python = env / "bin" / "python"
        subprocess.run([python, "-m", "pip", "install", "-q", requirement], check=True)
        pythons[sdk] = python
    return pythons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venvs", type=Path,
                        help="reuse virtualenvs DIR/<sdk> made by an earlier run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.venvs or Path(tmp)
        pythons = ({sdk: root / sdk / "bin" / "python" for sdk in SDKS} if args.venvs
                   else make_venvs(root))
        work = Path(tmp) / "cases.json"
        work.write_text(json.dumps(cases()))
        for phase in ("sign", "validate"):
            for sdk, python in pythons.items():
                subprocess.run([python, __file__, "--worker", sdk, phase, str(work)],
                               check=True)
        data = json.loads(work.read_text())
    versions = dict(SDKS)
    for c in data:
        for sdk, verdict in c["sdk"].items():
            if verdict is not None and verdict != c["expected"] and sdk not in c["differs"]:
                print(f"UNEXPECTED: {sdk} says {verdict} for {c['name']!r}", file=sys.stderr)
    OUT.write_text(json.dumps({"key": KEY, "sdks": versions, "vectors": data},
                              indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(data)} vectors to {OUT}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        main()

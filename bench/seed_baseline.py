"""The baseline: the seed example (seeds/002), Flask + pandas, run as the seed runs it.

Every final-status callback appends a row and rebuilds a DataFrame from all rows,
then prints it; failed calls go to a second table that is written to CSV past 100.
Two changes, both for running it here: the SMS alert (a SignalWire REST call) is left
out, and ``--preload N`` starts it as if N calls had already been received.

Run as ``python3 bench/seed_baseline.py PORT --preload 10000 --workdir DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os

import pandas as pd
from flask import Flask, request

COLUMNS = ("Call SID", "Call Status", "Event Timestamp", "Call Direction", "To Number",
           "From Number", "Recording URL (if present)")

app = Flask(__name__)
failedCallArray: list[list[str | None]] = []
allCallArray: list[list[str | None]] = []


@app.route("/callbacks/voice", methods=["POST"])
def incoming_calls() -> tuple[str, int]:
    call_sid = request.values.get("CallSid", None)
    call_status = request.values.get("CallStatus", None)
    event_timestamp = request.values.get("Timestamp", None)
    recording_url = request.values.get("RecordingUrl", None)
    call_direction = request.values.get("Direction", None)
    to_number = request.values.get("To", None)
    from_number = request.values.get("From", None)
    logging.info("SID: %s, Status: %s, Timestamp: %s, Direction: %s",
                 call_sid, call_status, event_timestamp, call_direction)
    row = [call_sid, call_status, event_timestamp, call_direction, to_number, from_number,
           recording_url]
    if call_status not in ("ringing", "initiated", "answered", "in-progress", "queued",
                           "failed"):
        allCallArray.append(row)
        adf = pd.DataFrame(allCallArray, columns=COLUMNS)
        print("All Calls")
        print(adf.to_string())
    if call_status == "failed":
        failedCallArray.append(row)
        df = pd.DataFrame(failedCallArray, columns=COLUMNS)
        print("Failed Calls")
        print(df.to_string())
        if len(failedCallArray) > 100:
            df.to_csv("failedCallReport.csv", index=False, encoding="utf-8")
            failedCallArray.clear()
    return ("", 200)


@app.route("/healthz")
def healthz() -> str:
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--preload", type=int, default=0)
    parser.add_argument("--workdir", default=".")
    args = parser.parse_args()
    os.chdir(args.workdir)
    logging.basicConfig(level=logging.INFO)
    for i in range(args.preload):
        allCallArray.append([f"preloaded-{i}", "completed", "Mon, 05 Jan 2026 09:00:00 +0000",
                             "inbound", "+15550000000", "+15551111111", ""])
    app.run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()

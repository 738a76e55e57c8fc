-- wrk script: POST pre-signed voice callbacks, a new CallSid on every request.
-- Usage: wrk -s bench/load.lua URL -- BODIES_FILE [FIRST]
-- BODIES_FILE has one "signature body" line per request (bench/workload.py writes it);
-- the script cycles through it from line FIRST + 1 (default 1), so it must hold more
-- lines than the run sends.
local requests = {}
local index = 0

function init(args)
  index = tonumber(args[2] or "0")
  for line in io.lines(args[1]) do
    local sig, body = line:match("^(%S+) (.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-SignalWire-Signature"] = sig,
    }, body)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end

-- wrk script of bench/run.
--   WRK_BODY_FILE  POST this file's bytes as application/x-www-form-urlencoded (else GET)
--   WRK_DELAY_MS   wait this long before each request on a connection (paced fallback when
--                  oha is absent: an approximate fixed rate, without coordinated-omission
--                  correction)
--   WRK_JSON       where done() writes the run's figures as one JSON object
local body_file = os.getenv("WRK_BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local out = os.getenv("WRK_JSON")
  local f = out and out ~= "" and assert(io.open(out, "w")) or io.stdout
  local e = summary.errors
  f:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
  if f ~= io.stdout then f:close() end
end

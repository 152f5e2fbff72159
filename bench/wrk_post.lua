-- POST one chat completion per request; prints a JSON summary line for bench/loadgen.py to parse.
-- Settings come from the environment so one script serves every target:
--   BENCH_MODEL (model name), BENCH_AUTH (Authorization value, may be empty),
--   BENCH_EXTRA_HEADERS (name: value pairs separated by "\n").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH") or ""
if auth ~= "" then
  wrk.headers["Authorization"] = auth
end
for line in string.gmatch(os.getenv("BENCH_EXTRA_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "mock") ..
  '","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

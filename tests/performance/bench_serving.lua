-- wrk script for bench_serving.py: GET requests to the Edge Function, one per user of a list,
-- round robin (each thread from its own place in the list), each with the user's own JWT.
--   wrk -t T -c C -d 10s -s bench_serving.lua URL -- TOKENS_FILE QUERY T
-- TOKENS_FILE: one access token per line. QUERY: the query string (limit, MMR settings).
-- At the end, writes the figures as JSON to $WRK_OUT: latency percentiles in microseconds
-- from wrk's histogram of every request, which wrk corrects for coordinated omission before
-- `done` (a stalled connection's missed requests count at the latency they would have had),
-- counts, and errors (answers with a status >= 400 are "status").

local requests = {}
local next_request = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_index", threads - 1)
end

function init(args)
  for token in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format(
      "GET", "/?" .. args[2], { ["Authorization"] = "Bearer " .. token }
    )
  end
  if #requests == 0 then
    error("no tokens in " .. args[1])
  end
  -- Thread i of T starts i/T of the way through the list, so threads request different users.
  next_request = math.floor(thread_index * #requests / tonumber(args[3]))
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, _)
  local e = summary.errors
  local out = assert(io.open(os.getenv("WRK_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean
  ))
  out:close()
end

-- Shared by the wrk body scripts: a unique number per request (so creates never collide,
-- per thread and per run) and one machine-readable summary line:
--   WRK <req/s> <p50 ms> <p99 ms> <errors>
math.randomseed(os.time())
local counter = 0
local threads = {}

function setup(thread)
  thread:set("base", (#threads + 1) * 1000000000 + math.random(1, 999) * 1000000000000)
  table.insert(threads, thread)
end

-- The next unique number as a string (%d: Lua would print a large number as 1.2e+15).
function next_id()
  counter = counter + 1
  return string.format("%d", base + counter)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %.0f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status + e.connect + e.read + e.write + e.timeout))
end

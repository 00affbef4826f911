-- wrk script of the serving benchmark (benchmarks/wrk.py runs it; not meant to be run alone).
--
-- Sends POST requests whose bodies are the lines of the file $FLTS_WRK_BODIES, round-robin
-- per thread, with content-type application/json. When $FLTS_WRK_RATE (requests/s for this
-- thread) is set, every request is given an absolute send slot start + k / rate, shared by
-- the thread's connections, and delay() holds each connection until its slot: a constant
-- offered rate (wrk2-style pacing, which Debian's wrk lacks), as long as the connections are
-- enough to carry it. wrk starts its latency clock when a request is written, so the wait
-- for a slot is not counted; a slot already past is sent at once (the schedule catches up).
-- done() prints one line "FLTS_WRK_JSON {...}" with the counts and latency percentiles.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } flts_timespec;
int clock_gettime(int clock_id, flts_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local clock = ffi.new("flts_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
   return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local requests = {}
local next_request = 0

function init(args)
   local path = os.getenv("FLTS_WRK_BODIES")
   for body in io.lines(path) do
      local headers = { ["Content-Type"] = "application/json" }
      requests[#requests + 1] = wrk.format("POST", nil, headers, body)
   end
   if #requests == 0 then
      error("no request bodies in " .. path)
   end
end

function request()
   next_request = next_request % #requests + 1
   return requests[next_request]
end

-- wrk decides once, when the script is loaded, whether delay() exists: define it only for
-- the paced mode, so the closed loop keeps wrk's direct path.
local rate = tonumber(os.getenv("FLTS_WRK_RATE") or "")
if rate ~= nil and rate > 0 then
   local interval_ms = 1000.0 / rate
   local next_slot = nil
   function delay()
      local now = now_ms()
      if next_slot == nil then
         next_slot = now
      end
      local wait = next_slot - now
      next_slot = next_slot + interval_ms
      if wait <= 0 then
         return 0
      end
      return math.floor(wait + 0.5)
   end
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      'FLTS_WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,'
         .. '"read":%d,"write":%d,"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,'
         .. '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max
   ))
end

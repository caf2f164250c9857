-- bench/common.lua: shared by the bench scripts (loaded with dofile).
-- done() prints one machine-readable line that bench.py reads:
--   BENCH requests=N duration_us=N p50_us=N p99_us=N max_us=N
--         status_errors=N socket_errors=N
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d " ..
      "status_errors=%d socket_errors=%d\n",
      summary.requests, summary.duration, latency:percentile(50),
      latency:percentile(99), latency.max, e.status,
      e.connect + e.read + e.write + e.timeout))
end

-- Numbers the wrk threads 0, 1, ... (setup runs once per thread).
local made = 0
function setup(thread)
   thread:set("thread_id", made)
   made = made + 1
end

-- Stops this wrk thread after BENCH_STOP responses with status
-- BENCH_STOP_STATUS (default 200), or at the first BENCH_STOP_ON status.
-- Defining response() makes wrk parse bodies, so only set it when asked.
function bench_stop_after()
   local stop = tonumber(os.getenv("BENCH_STOP") or "")
   local on = tonumber(os.getenv("BENCH_STOP_ON") or "")
   local want = tonumber(os.getenv("BENCH_STOP_STATUS") or "200")
   if stop == nil and on == nil then
      return
   end
   local seen = 0
   response = function(status, headers, body)
      if status == want then
         seen = seen + 1
      end
      if (stop ~= nil and seen >= stop) or status == on then
         wrk.thread:stop()
      end
   end
end

-- BENCH_DELAY_MS paces each connection (for latency, not throughput).
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause ~= nil then
   delay = function() return pause end
end

-- The n-th phone number otp_demo accepts, URL-encoded (%2B1...): as
-- bench/benchlib.py's nanp(), with the same area codes and exchanges.
local areas = {}
for a in string.gmatch("201 202 203 205 206 207 208 209 210 212 213 214 " ..
      "215 216 217 218 219 224 225 228 229 231 234 239 240 248 251 252 " ..
      "253 254 256 260 262 267 269 270 272 276 281 301", "%d+") do
   areas[#areas + 1] = a
end
local exchanges = {}
for x = 200, 999 do
   if x % 100 ~= 11 and x ~= 976 then
      exchanges[#exchanges + 1] = x
   end
end
function nanp(n)
   local line = n % 10000
   n = math.floor(n / 10000)
   local ex = exchanges[n % #exchanges + 1]
   n = math.floor(n / #exchanges)
   return string.format("%%2B1%s%03d%04d", areas[n % #areas + 1], ex, line)
end

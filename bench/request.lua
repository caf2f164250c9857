-- bench/request.lua: POST /request, a new phone number every time.
--   BENCH_SID, BENCH_CSRF  a session (otp_sid cookie) and its CSRF token
--   BENCH_FIRST            where the count starts: each wrk thread sends
--                          nanp(FIRST + thread * 10^8 + 1), nanp(... + 2)...
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
bench_stop_after()

local csrf = os.getenv("BENCH_CSRF")
local first = tonumber(os.getenv("BENCH_FIRST") or "2000000000")
local headers = {
   ["Content-Type"] = "application/x-www-form-urlencoded",
   ["Cookie"] = "otp_sid=" .. os.getenv("BENCH_SID"),
}
local n = 0

function init(args)
   n = first + (thread_id or 0) * 100000000
end

function request()
   n = n + 1
   return wrk.format("POST", "/request", headers,
      string.format("phone=%s&csrf=%s", nanp(n), csrf))
end

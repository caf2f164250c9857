-- bench/verify.lua: POST /verify with a wrong code, round robin over live
-- verifications so none is locked by MAX_ATTEMPTS during a run.
--   BENCH_SID, BENCH_CSRF  the session the verifications were sent for
--   BENCH_VIDS             file with one otp_vid cookie value per line
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
bench_stop_after()

local sid = os.getenv("BENCH_SID")
local body = "token=ZZZZZZ&csrf=" .. os.getenv("BENCH_CSRF")
local reqs, i = {}, 0

function init(args)
   for vid in io.lines(os.getenv("BENCH_VIDS")) do
      reqs[#reqs + 1] = wrk.format("POST", "/verify", {
         ["Content-Type"] = "application/x-www-form-urlencoded",
         ["Cookie"] = "otp_sid=" .. sid .. "; otp_vid=" .. vid,
      }, body)
   end
   -- threads start at different places in the list
   i = ((thread_id or 0) * 7919) % #reqs
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end

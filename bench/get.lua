-- bench/get.lua: GET / as a first visit (no cookie: a new session each time).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
bench_stop_after()

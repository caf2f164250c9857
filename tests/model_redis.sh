#!/bin/sh
# tests/model_redis.sh: tests/model.c on the Redis store. Starts Debian's
# redis-server on a unix socket in a temp dir (nothing saved), runs
# build/model-redis against it (MODEL_STORE), MODEL_OPS steps (default
# 100000: each step is a round trip or a few), then stops it.
#   OTP_MODEL_REDIS   the model built WITH_REDIS   SEED   its seed (1)
set -u
model=${OTP_MODEL_REDIS:-build/model-redis}
dir=$(mktemp -d /tmp/otp_model_redis.XXXXXX) || exit 1
sock=$dir/redis.sock
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 \
    --save '' --appendonly no --dir "$dir" --logfile "$dir/redis.log" \
    </dev/null >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
i=0
until [ "$(redis-cli -s "$sock" PING 2>/dev/null)" = PONG ]; do
	i=$((i + 1))
	if [ "$i" -gt 250 ]; then
		echo "FAIL model_redis: redis-server did not answer on $sock"
		echo "0 passed, 1 failed"
		exit 1
	fi
	sleep 0.02
done
MODEL_STORE="unix://$sock" MODEL_OPS=${MODEL_OPS:-100000} "$model" "${SEED:-1}"

/*
 * tests/model.c: the code store and the rate limits against a reference
 * model, for MODEL_OPS random operations (default 1,000,000).
 *
 *	build/model [SEED]	(MODEL_OPS=N in the environment)
 *
 * Drives otp_demo.c's own verification_start() and verification_check()
 * (the functions both the forms and the JSON API call) in process, with
 * a fake clock and random source (the only things replaced; SMS go to
 * the console sender, whose lines go to /dev/null, and each code is read
 * back from the record it was sent for). Operations: requests from many
 * web sessions and the API, from IPv4 and IPv6 clients in many networks,
 * for a few hundred numbers; right, wrong, wrong-length and other
 * sessions' codes; API cancels; floods of new numbers; small steps and
 * jumps of the clock; restarts through STATE_DIR.
 *
 * MODEL_STORE=unix:///.../redis.sock (a build WITH_REDIS: build/model-redis,
 * make model_redis) runs the same steps on the Redis store: its scripts
 * take the fake clock as their argument (see "redis store" in otp_demo.c).
 * A restart there keeps the pending codes (they live in Redis), and the
 * model keeps them too; the store's running count is Redis's pending
 * index, checked against the model's codes; "a refused request changes no
 * counter" reads the windows it would have counted, in Redis, before and
 * after.
 *
 * The model is small and unbounded: a window per number, address and
 * network in plain arrays, every record ever made, the limits as the
 * README states them. After each step, the program's answer must be the
 * model's, and these must hold:
 *   - no number gets more SMS in a window than its cap, no address or
 *     network more than theirs, the server never more than its caps;
 *   - no code is guessed more than MAX_ATTEMPTS times;
 *   - a code is accepted only in the session it was sent for, once;
 *   - a refused request changes no counter.
 * Prints "N passed, M failed" (one per invariant family); exit 1 on the
 * first disagreement, with the seed, step and operation.
 */
#include "../otp_demo.c"

#define NNUM 240          /* numbers */
#define NSESS 48          /* web sessions; index NSESS is the API */
#define NNET 24           /* networks: even IPv4 /24s, odd IPv6 /48s */
#define NSUB 4            /* addresses per network (v4 hosts, v6 /64s) */
#define NADDR (NNET * NSUB)

/* The config the model runs: small caps, so that every limit is hit. */
static const char model_cfg[] =
    "TOKEN_LENGTH=6\nTOKEN_ALPHABET='digits'\nSMS_PROVIDER='console'\n"
    "CODE_TTL=120\nMAX_ATTEMPTS=3\nRESEND_INTERVAL=30\n"
    "VERIFY_PER_IP_PER_HOUR=10\nSMS_PER_NUMBER_PER_HOUR=3\n"
    "SMS_PER_IP_PER_HOUR=5\nSMS_PER_HOUR=60\nSMS_PER_DAY=400\n"
    "NETWORK_SHARE=25\nAPI_SMS_PER_HOUR=20\nAPI_SMS_PER_NUMBER_PER_HOUR=3\n"
    "API_SENDS_PER_VERIFICATION=2\nMAX_PENDING=4096\n"
    "ALLOWED_COUNTRY_CODES='+1'\n";

static int64_t now_ms = 1000 * HOUR_MS; /* the fake clock */
static FILE *report;              /* our stdout (fd 1 is /dev/null) */
static unsigned long long seed;
static const int64_t wall_offset = 1700000000000LL - 1000 * HOUR_MS;
static uint64_t rng_state;
static char state_dir[64], cfg_file[80];
static unsigned long long steps, fails;
static unsigned long long n_req, n_sent, n_refused, n_checks, n_ok;
static const char *store_url; /* MODEL_STORE, or NULL: memory */

static int64_t
fake_now(void)
{
	return now_ms;
}

static int64_t
fake_wall(void)
{
	return now_ms + wall_offset;
}

/* xorshift64*: the test's own choices and the fake random source. */
static uint64_t
rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static uint32_t
pick(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

static int
fake_rng(void *ctx, unsigned char *out, size_t len)
{
	(void)ctx;
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)(rnd() >> 56);
	return 0;
}

/* ---- the reference model ---------------------------------------------- */

struct mwin {
	int64_t start, last;
	uint32_t count;
	bool used;
};

enum mstate { M_LIVE, M_LOCKED, M_VERIFIED, M_EXPIRED, M_GONE };

struct mrec {
	uint32_t slot;
	uint8_t id[OTP_ID_LEN];
	int owner;            /* session index, NSESS: the API */
	int num;
	int64_t created;
	uint32_t attempts, sends;
	enum mstate state;
	char code[OTP_MAX_CODE_LEN + 1];
};

static struct {
	struct mwin num[2][NNUM], addr[NADDR], net_h[NNET], net_d[NNET];
	struct mwin verify[NADDR];
	struct mwin hour, day, api;
	int newest[2][NNUM];          /* record index, or -1 */
	struct mrec *rec;             /* every record ever made */
	int nrec, caprec;
	int last_of[NSESS + 1];       /* a session's last record, or -1 */
} M;

static const struct config *C;  /* the instance's config */

static uint32_t
mcount(const struct mwin *w, int64_t period)
{
	return w->used && now_ms - w->start < period ? w->count : 0;
}

static void
madd(struct mwin *w, int64_t period)
{
	if (mcount(w, period) == 0 || !w->used) {
		w->start = now_ms;
		w->count = 0;
		w->used = true;
	}
	w->count++;
}

/* A record's state now: ages it as the store does. */
static enum mstate
mage(struct mrec *r)
{
	int64_t age = now_ms - r->created, ttl = C->code_ttl * 1000;

	if ((r->state == M_LIVE || r->state == M_LOCKED) && age >= ttl)
		r->state = M_EXPIRED;
	if ((r->state == M_EXPIRED || r->state == M_VERIFIED) &&
	    age >= ttl + OTP_TOMBSTONE_MS)
		r->state = M_GONE;
	return r->state;
}

/* A network's share of a cap: NETWORK_SHARE percent, at least one. */
static uint32_t
mshare(long cap)
{
	long n = cap * C->network_share / 100;

	return n > 0 ? (uint32_t)n : 1;
}

/* The model's answer to a send request; counts it if allowed. *resend
 * is the record to resend, or -1 for a new one. */
static enum limit
model_send(int owner, int num, int addr, int *resend)
{
	bool api = owner == NSESS, client = addr >= 0;
	int ns = api, net = addr / NSUB;
	struct mwin *nw = &M.num[ns][num];
	uint32_t per_num = (uint32_t)(api ? C->api_sms_per_number_per_hour :
	    C->sms_per_number_per_hour);
	int r;

	*resend = -1;
	if (nw->used && nw->last != 0 &&
	    now_ms - nw->last < C->resend_interval * 1000)
		return LIMIT_RESEND;
	if (mcount(nw, HOUR_MS) >= per_num)
		return LIMIT_NUMBER;
	if (client && mcount(&M.addr[addr], HOUR_MS) >=
	    (uint32_t)C->sms_per_ip_per_hour)
		return LIMIT_IP;
	if (api && mcount(&M.api, HOUR_MS) >= (uint32_t)C->api_sms_per_hour)
		return LIMIT_API_HOUR;
	if (mcount(&M.hour, HOUR_MS) >= (uint32_t)C->sms_per_hour)
		return LIMIT_HOUR;
	if (mcount(&M.day, DAY_MS) >= (uint32_t)C->sms_per_day)
		return LIMIT_DAY;
	if (client && (mcount(&M.net_h[net], HOUR_MS) >= mshare(
	    C->sms_per_hour) || mcount(&M.net_d[net], DAY_MS) >=
	    mshare(C->sms_per_day)))
		return LIMIT_NETWORK;
	r = M.newest[ns][num];
	if (r >= 0 && M.rec[r].owner == owner && mage(&M.rec[r]) == M_LIVE) {
		if (api && M.rec[r].sends >= (uint32_t)C->api_sends_per_verification)
			return LIMIT_VERIFICATION;
		*resend = r;
	}
	madd(nw, HOUR_MS);
	nw->last = now_ms;
	if (client) {
		madd(&M.addr[addr], HOUR_MS);
		madd(&M.net_h[net], HOUR_MS);
		madd(&M.net_d[net], DAY_MS);
	}
	if (api)
		madd(&M.api, HOUR_MS);
	madd(&M.hour, HOUR_MS);
	madd(&M.day, DAY_MS);
	return LIMIT_NONE;
}

/* ---- the program -------------------------------------------------------- */

static struct otp *otp;
static struct owner owners[NSESS + 1];
static char addrs[NADDR][48];
static char numbers[NNUM][OTP_MAX_PHONE_LEN + 1];

static void
fail(const char *what, ...) __attribute__((format(printf, 1, 2)));

static void
fail(const char *what, ...)
{
	va_list ap;

	fprintf(report, "FAIL model: step %llu (seed %llu): ", steps, seed);
	va_start(ap, what);
	vfprintf(report, what, ap);
	va_end(ap);
	fprintf(report, "\n0 passed, 1 failed\n");
	fflush(report);
	_exit(1);
}

/* Starts an instance on the model's config and STATE_DIR, its sweeper
 * stopped (the test ages records itself, on its clock). */
static void
start(void)
{
	char err[512];

	setenv("OTP_STATE_DIR", state_dir, 1);
	otp = otp_new(cfg_file, false, err, sizeof(err));
	if (otp == NULL)
		fail("otp_new: %s", err);
	pthread_mutex_lock(&otp->stop_lock);
	otp->stopping = true;
	pthread_cond_signal(&otp->stop_cond);
	pthread_mutex_unlock(&otp->stop_lock);
	pthread_join(otp->sweeper, NULL);
	otp->sweeper_started = false;
	otp->now_ms = fake_now;
	otp->wall_ms = fake_wall;
	otp->rng = fake_rng;
	C = otp->cfg;
	if (store_url == NULL && state_load(otp, C->state_dir, "limits.state",
	    STATE_MAGIC " ", limits_load_line, "", err, sizeof(err)) != 0)
		fail("state_load: %s", err);
	owners[NSESS] = otp->api;
}
/* (otp_new read limits.state on the real clocks; state_load read it
 * again on the fake ones, over the same keys' slots.) */

/* A restart: the caps go through STATE_DIR; pending codes are lost
 * (Redis keeps both). */
static void
restart(void)
{
	otp_destroy(otp); /* saves limits.state */
	start();
	if (store_url != NULL)
		return;
	for (int i = 0; i < M.nrec; i++)
		if (M.rec[i].state != M_GONE)
			M.rec[i].state = M_GONE;
	for (int ns = 0; ns < 2; ns++)
		for (int n = 0; n < NNUM; n++)
			M.newest[ns][n] = -1;
}

/* The code record (slot, id) holds: the memory store's, or the one
 * sealed in its Redis hash. */
static void
record_code(uint32_t slot, const uint8_t id[OTP_ID_LEN],
            char code[OTP_MAX_CODE_LEN + 1])
{
	code[0] = '\0';
	if (store_url == NULL) {
		str_copy(code, OTP_MAX_CODE_LEN + 1, otp->store.rec[slot].code);
		return;
	}
#ifdef WITH_REDIS
	{
		char k[48];
		const char *argv[3] = { "HGET", k, "enc" };
		redisReply *rep;

		redis_rec_key(k, id);
		if ((rep = redis_plain(otp, C, 3, argv)) == NULL)
			fail("redis: HGET %s", k);
		if (rep->type != REDIS_REPLY_STRING ||
		    redis_code_open(otp, id, rep->str, code) != 0)
			code[0] = '\0';
		freeReplyObject(rep);
	}
#else
	(void)id;
#endif
}

static struct client
client_of(int addr)
{
	struct client cl;

	client_init(otp, otp->cfg, &cl, addr >= 0 ? addrs[addr] : NULL);
	return cl;
}

#ifdef WITH_REDIS
/* The counting windows a send of number num by owner from cl touches, as
 * Redis holds them (every field of each hash), into out. */
static void
redis_counters(int owner, int num, const struct client *cl, char *out,
               size_t size)
{
	static const char script[] = "local o = {}\n"
	    "for _, k in ipairs(KEYS) do\n"
	    "  for _, x in ipairs(redis.call('HGETALL', k)) do o[#o + 1] = x end\n"
	    "  o[#o + 1] = '|'\n"
	    "end\n"
	    "return table.concat(o, ',')\n";
	char k[7][48];
	const char *argv[10] = { "EVAL", script, "7" };
	redisReply *rep;

	redis_num_key(otp, owner == NSESS ? NS_API : NS_WEB, numbers[num],
	    k[0]);
	redis_key(k[1], 48, "a", cl->addr != NULL ? cl->akey : 0);
	redis_key(k[2], 48, "nh", cl->addr != NULL ? cl->nkey : 0);
	redis_key(k[3], 48, "nd", cl->addr != NULL ? cl->nkey : 0);
	str_copy(k[4], 48, "otp:g:hour");
	str_copy(k[5], 48, "otp:g:day");
	str_copy(k[6], 48, "otp:g:api");
	for (int i = 0; i < 7; i++)
		argv[3 + i] = k[i];
	if ((rep = redis_plain(otp, C, 10, argv)) == NULL ||
	    rep->type != REDIS_REPLY_STRING)
		fail("redis: the counters of number %d", num);
	str_copy(out, size, rep->str);
	freeReplyObject(rep);
}
#endif

/* The counters a refused request must leave alone, as text: the memory
 * store's change count, or Redis's windows for this request. */
static void
counters(int owner, int num, const struct client *cl, char *out, size_t size)
{
	snprintf(out, size, "%llu", (unsigned long long)otp->limits.changes);
#ifdef WITH_REDIS
	if (store_url != NULL)
		redis_counters(owner, num, cl, out, size);
#else
	(void)owner, (void)num, (void)cl;
#endif
}

static void
op_request(int owner, int num, int addr)
{
	struct client cl = client_of(addr);
	char before[1024], after[1024];
	struct start st;
	enum limit want, got;
	int resend, rc;

	n_req++;
	counters(owner, num, &cl, before, sizeof(before));
	want = model_send(owner, num, addr, &resend);
	rc = verification_start(otp, otp->cfg, numbers[num], NULL, &cl,
	    &owners[owner], "Your token is {code}", &st);
	got = rc == 0 ? LIMIT_NONE : st.limit;
	if (rc != 0 && st.limit == LIMIT_NONE)
		fail("request: not a limit (full %d, internal %d, sent %d)",
		    st.full, st.internal, st.sent);
	if (got != want)
		fail("request owner %d number %d addr %s: program %s, model %s",
		    owner, num, addr >= 0 ? addrs[addr] : "api",
		    limit_names[got], limit_names[want]);
	if (got != LIMIT_NONE) {
		n_refused++;
		counters(owner, num, &cl, after, sizeof(after));
		if (strcmp(before, after) != 0)
			fail("a refused request (%s) changed a counter",
			    limit_names[got]);
		return;
	}
	n_sent++;
	if (resend >= 0) {
		struct mrec *r = &M.rec[resend];

		if (!st.resent || st.slot != r->slot ||
		    memcmp(st.id, r->id, OTP_ID_LEN) != 0)
			fail("request: the model resends record %d, the program "
			    "%s", resend, st.resent ? "another" : "made a new one");
		r->sends++;
		M.last_of[owner] = resend;
		return;
	}
	if (st.resent)
		fail("request: the program resent, the model makes a new one");
	if (M.nrec == M.caprec) {
		M.caprec *= 2;
		if ((M.rec = realloc(M.rec, (size_t)M.caprec *
		    sizeof(*M.rec))) == NULL)
			fail("out of memory");
	}
	{
		struct mrec *r = &M.rec[M.nrec];

		memset(r, 0, sizeof(*r));
		r->slot = st.slot;
		memcpy(r->id, st.id, OTP_ID_LEN);
		r->owner = owner;
		r->num = num;
		r->created = now_ms;
		r->sends = 1;
		r->state = M_LIVE;
		/* What the SMS said: the record's own code. */
		record_code(st.slot, st.id, r->code);
		if (strlen(r->code) != (size_t)C->token_length)
			fail("record %u holds no code", st.slot);
		M.newest[owner == NSESS][num] = M.nrec;
		M.last_of[owner] = M.nrec++;
	}
}

/* The model's answer to a check of record ri by owner with code kind
 * (0 right, 1 wrong, 2 wrong length) from addr. */
static enum check
model_check(int ri, int owner, int kind, int addr, enum limit *limit)
{
	struct mrec *r = &M.rec[ri];
	enum mstate s;

	*limit = LIMIT_NONE;
	if (addr >= 0 && mcount(&M.verify[addr], HOUR_MS) >=
	    (uint32_t)C->verify_per_ip_per_hour) {
		*limit = LIMIT_VERIFY_IP;
		return CHECK_UNKNOWN;
	}
	s = mage(r);
	if (s == M_GONE || r->owner != owner)
		return CHECK_UNKNOWN;
	if (s == M_EXPIRED)
		return CHECK_EXPIRED;
	if (s == M_VERIFIED)
		return CHECK_DONE;
	if (s == M_LOCKED)
		return CHECK_LOCKED;
	if (kind == 0) {
		r->state = M_VERIFIED;
		return CHECK_OK;
	}
	if (addr >= 0)
		madd(&M.verify[addr], HOUR_MS);
	if (++r->attempts > (uint32_t)C->max_attempts)
		fail("model: more guesses than MAX_ATTEMPTS");
	if (r->attempts >= (uint32_t)C->max_attempts) {
		r->state = M_LOCKED;
		return CHECK_LOCKED;
	}
	return CHECK_WRONG;
}

/* The record as a check left it (its page shows it): what the model
 * holds, the record's own number, nothing for a record not found. */
static void
check_view(int ri, enum check got, const struct view *v)
{
	static const enum rec_state states[] = { [M_LIVE] = REC_LIVE,
	    [M_LOCKED] = REC_LOCKED, [M_VERIFIED] = REC_VERIFIED,
	    [M_EXPIRED] = REC_EXPIRED, [M_GONE] = REC_FREE };
	const struct mrec *r = &M.rec[ri];
	bool found = got != CHECK_UNKNOWN;

	if (v->state != (found ? states[r->state] : REC_FREE) ||
	    v->attempts != (found ? r->attempts : 0))
		fail("check of record %d: its view says state %d, %u wrong "
		    "codes; the model %d, %u", ri, (int)v->state, v->attempts,
		    found ? (int)states[r->state] : REC_FREE,
		    found ? r->attempts : 0);
	/* An ended record keeps its number only for a web session's
	 * expired page ("send a new code"). */
	if (strcmp(v->phone, !found || got == CHECK_DONE ||
	    (got == CHECK_EXPIRED && r->owner == NSESS) ? "" :
	    numbers[r->num]) != 0)
		fail("check of record %d (%d): its view has the wrong number",
		    ri, (int)got);
}

static void
op_check(int owner, int ri, int kind, int addr)
{
	static const char *const names[CHECK__N] = { "ok", "wrong", "locked",
	    "unknown", "expired", "done" };
	struct mrec *r = &M.rec[ri];
	struct client cl = client_of(addr);
	char code[OTP_MAX_CODE_LEN + 2];
	struct view v;
	enum limit want_limit, got_limit;
	enum check want, got;
	int owner_was = r->owner;
	long retry;

	n_checks++;
	str_copy(code, sizeof(code), r->code);
	if (kind == 1)
		code[0] = code[0] == '9' ? '0' : (char)(code[0] + 1);
	else if (kind == 2)
		code[strlen(code) - 1] = '\0';
	want = model_check(ri, owner, kind, addr, &want_limit);
	got = verification_check(otp, otp->cfg, r->slot, r->id, &owners[owner], code,
	    strlen(code), &cl, &v, &got_limit, &retry, NULL);
	if (got != want || got_limit != want_limit)
		fail("check of record %d (owner %d) by %d, kind %d: program "
		    "%s/%s, model %s/%s", ri, owner_was, owner, kind, names[got],
		    limit_names[got_limit], names[want],
		    limit_names[want_limit]);
	if (got == CHECK_OK) {
		n_ok++;
		if (owner != owner_was)
			fail("a code was accepted in another session");
		if (strcmp(v.phone, numbers[r->num]) != 0)
			fail("verified the wrong number");
	}
	check_view(ri, got, &v);
	wipe(&v, sizeof(v));
}

static void
op_cancel(int ri)
{
	struct mrec *r = &M.rec[ri];
	enum mstate s = mage(r);
	int want, got;

	if (s == M_GONE || r->owner != NSESS)
		want = -1;
	else if (s == M_EXPIRED || s == M_VERIFIED)
		want = -2;
	else
		want = 0;
	got = STORE_CALL(otp, cancel, otp, C, r->slot, r->id, &otp->api,
	    now_ms);
	if (got != want)
		fail("cancel of record %d: program %d, model %d", ri, got, want);
	if (want == 0)
		r->state = M_GONE;
}

/* The caps, checked on the model's own counts after each step. */
static void
check_caps(void)
{
	if (mcount(&M.hour, HOUR_MS) > (uint32_t)C->sms_per_hour ||
	    mcount(&M.day, DAY_MS) > (uint32_t)C->sms_per_day ||
	    mcount(&M.api, HOUR_MS) > (uint32_t)C->api_sms_per_hour)
		fail("a global cap was exceeded");
}

/* The store's running count of records with a code equals a scan (on
 * Redis: the pending index's count equals the model's codes). */
static void
check_live(void)
{
	uint32_t n = 0;

#ifdef WITH_REDIS
	if (store_url != NULL) {
		unsigned long p = redis_pending(otp, C);

		for (int i = 0; i < M.nrec; i++) {
			enum mstate s = mage(&M.rec[i]);

			n += s == M_LIVE || s == M_LOCKED;
		}
		if (p != n)
			fail("Redis holds %lu pending codes, the model %u", p, n);
		return;
	}
#endif
	for (uint32_t i = 0; i < otp->store.cap; i++)
		n += rec_has_code(&otp->store.rec[i]);
	if (n != otp->store.live)
		fail("store.live is %u, a scan finds %u", otp->store.live, n);
}

static void
setup(void)
{
	FILE *f;

	snprintf(state_dir, sizeof(state_dir), "/tmp/otp_model_XXXXXX");
	if (mkdtemp(state_dir) == NULL)
		fail("mkdtemp: %s", strerror(errno));
	snprintf(cfg_file, sizeof(cfg_file), "%s.cfg", state_dir);
	if ((f = fopen(cfg_file, "w")) == NULL)
		fail("%s: %s", cfg_file, strerror(errno));
	fputs(model_cfg, f);
	if (store_url != NULL)
		fprintf(f, "STORE='%s'\n", store_url);
	fclose(f);
	for (int i = 0; i < NNUM; i++)
		snprintf(numbers[i], sizeof(numbers[i]), "+1201555%04d", i);
	for (int n = 0; n < NNET; n++)
		for (int s = 0; s < NSUB; s++) {
			char *a = addrs[n * NSUB + s];

			/* IPv6: rotating inside a /64 is the same address. */
			if (n % 2)
				snprintf(a, 48, "2001:db8:%x:%x::%x", n, s,
				    (unsigned)pick(65535) + 1);
			else
				snprintf(a, 48, "203.0.%d.%d", n, s + 1);
		}
	for (int i = 0; i < NSESS; i++) {
		owners[i].ns = NS_WEB;
		for (int k = 0; k < OTP_SID_LEN; k++)
			owners[i].sid[k] = (uint8_t)(i * 7 + k);
	}
	memset(M.newest, -1, sizeof(M.newest));
	memset(M.last_of, -1, sizeof(M.last_of));
	M.caprec = 1 << 16;
	M.rec = calloc((size_t)M.caprec, sizeof(*M.rec));
	if (M.rec == NULL)
		fail("out of memory");
}

/* An address of the pool, sometimes spelled another way inside its /64. */
static int
some_addr(void)
{
	int a = (int)pick(NADDR);

	if ((a / NSUB) % 2)
		snprintf(addrs[a], 48, "2001:db8:%x:%x::%x:%x", a / NSUB,
		    a % NSUB, (unsigned)pick(65535), (unsigned)pick(65535));
	return a;
}

static void
step(void)
{
	uint32_t r = pick(1000);
	int owner = (int)pick(NSESS + 1);
	int addr = owner == NSESS && pick(2) ? -1 : some_addr();

	if (r < 420) {
		/* A few numbers are popular: collisions between sessions. */
		int num = pick(4) ? (int)pick(16) : (int)pick(NNUM);

		op_request(owner, num, addr);
	} else if (r < 800) {
		int ri = M.last_of[owner];

		if (pick(8) == 0 && M.nrec > 0)
			ri = (int)pick((uint32_t)M.nrec); /* someone else's */
		if (ri >= 0)
			op_check(owner, ri, pick(10) < 4 ? 0 : pick(5) ? 1 : 2,
			    addr);
	} else if (r < 830) {
		if (M.nrec > 0)
			op_cancel(M.last_of[NSESS] >= 0 && pick(2) ?
			    M.last_of[NSESS] : (int)pick((uint32_t)M.nrec));
	} else if (r < 980) {
		now_ms += (int64_t)pick(60000);
	} else if (r < 990) {
		now_ms += (int64_t)pick((uint32_t)(25 * HOUR_MS));
	} else if (r < 999) {
		/* A flood of new numbers from one client. */
		for (int i = 0; i < 40; i++)
			op_request(owner, (int)pick(NNUM), addr);
	} else if (pick(10) == 0) {
		restart();
	}
	check_caps();
}

int
main(int argc, char **argv)
{
	const char *env = getenv("MODEL_OPS");
	unsigned long long ops = env != NULL ? strtoull(env, NULL, 10) :
	    1000000;
	char path[128];

	seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 1;
	store_url = getenv("MODEL_STORE");
	rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
	if ((report = fdopen(dup(1), "w")) == NULL)
		return 1;
	setvbuf(report, NULL, _IOLBF, 0);
	/* The console sender's lines and the log: not what is checked
	 * (MODEL_DEBUG=1 keeps the log on stderr). */
	if (getenv("MODEL_DEBUG") == NULL &&
	    freopen("/dev/null", "w", stderr) == NULL)
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	setup();
	{
		/* SMS lines go to the console: keep them from our output. */
		int out = dup(1), null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		close(null);
		start();
		for (steps = 0; steps < ops; steps++) {
			step();
			if ((steps & 0xffff) == 0)
				check_live();
		}
		check_live();
		fflush(stdout);
		dup2(out, 1);
		close(out);
	}
	fclose(report);
	printf("model: seed %llu, %llu steps: %llu requests (%llu sent, %llu "
	    "refused), %llu checks (%llu right), %d records\n", seed, steps,
	    n_req, n_sent, n_refused, n_checks, n_ok, M.nrec);
	printf("ok model: every answer was the model's\n");
	printf("ok model: caps, guesses and bindings held; live count true\n");
	printf("ok model: refused requests changed no counter\n");
	printf("3 passed, %llu failed\n", fails);
	otp_destroy(otp);
	for (size_t i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", state_dir,
		    i ? "limits.state" : "session.key");
		unlink(path);
	}
	rmdir(state_dir);
	unlink(cfg_file);
	free(M.rec);
	curl_global_cleanup();
	return 0;
}

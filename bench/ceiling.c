/*
 * bench/ceiling.c: the fastest otp_demo could be on its civetweb build.
 *
 *	ceiling [-h] -c CONFIG METHOD PATH RESPONSE [METHOD PATH RESPONSE]...
 *
 * A civetweb server with the same object file, compiler flags and options
 * as otp_demo (it includes otp_demo.c and calls its server_options() on the
 * same config file), whose one handler has no application logic: it reads
 * the request body, then replays the response otp_demo gave for that
 * METHOD and PATH. RESPONSE is that response as captured on the wire
 * (status line, headers, blank line, body); the headers written per answer
 * (Date, Connection) are made fresh. Like otp_demo's reply(), it sends the
 * whole answer with one mg_write(). make bench divides otp_demo's figures
 * by this program's.
 *
 * With -h it answers through civetweb's mg_response_header_start/_add/
 * _send instead, which send each header line with its own send() (with
 * tcp_nodelay, its own TCP segment): the way otp_demo answered before, kept
 * to show what one write saves.
 *
 * Logs "listening on http://HOST:PORT" on stderr like otp_demo; exits 0 on
 * SIGTERM or SIGINT.
 */

/* otp_demo's main becomes a function we never call; its server_options()
 * and config_load() are what we want. */
#define main otp_demo_main
int otp_demo_main(int argc, char **argv);
#include "../otp_demo.c"
#undef main

#define CEIL_MAX_ROUTES 8
#define CEIL_MAX_HEADERS 32
#define CEIL_MAX_RESPONSE (64 * 1024)

struct ceil_canned {
	char method[8];
	char path[64];
	int status;
	int nheaders;
	char *name[CEIL_MAX_HEADERS], *value[CEIL_MAX_HEADERS];
	const char *body;
	size_t body_len;
	char raw[CEIL_MAX_RESPONSE]; /* the file; names and values point in */
};

static struct ceil_canned ceil_routes[CEIL_MAX_ROUTES];
static int ceil_nroutes;
static bool ceil_headers; /* -h */

/* Parses a captured response in c->raw (len bytes). 0 or -1. */
static int
ceil_parse(struct ceil_canned *c, size_t len)
{
	char *p = c->raw, *end = c->raw + len, *eol, num[4];
	long status;

	if ((eol = memmem(p, len, "\r\n", 2)) == NULL || eol - p < 12 ||
	    strncmp(p, "HTTP/1.1 ", 9) != 0)
		return -1;
	*eol = '\0';
	memcpy(num, p + 9, 3);
	num[3] = '\0';
	if (parse_long(num, 100, 599, &status) != 0)
		return -1;
	c->status = (int)status;
	for (p = eol + 2; p < end; p = eol + 2) {
		char *colon;

		if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
			return -1;
		if (eol == p) { /* blank line: the body follows */
			c->body = eol + 2;
			c->body_len = (size_t)(end - (eol + 2));
			return 0;
		}
		*eol = '\0';
		if ((colon = strchr(p, ':')) == NULL)
			return -1;
		*colon = '\0';
		if (strcasecmp(p, "Date") == 0 || strcasecmp(p, "Connection") == 0)
			continue; /* civetweb adds these itself */
		if (c->nheaders >= CEIL_MAX_HEADERS)
			return -1;
		c->name[c->nheaders] = p;
		c->value[c->nheaders++] = colon + 1 + strspn(colon + 1, " ");
	}
	return -1;
}

static int
ceil_load(const char *method, const char *path, const char *file)
{
	struct ceil_canned *c;
	size_t len;
	FILE *f;

	if (ceil_nroutes >= CEIL_MAX_ROUTES)
		return -1;
	c = &ceil_routes[ceil_nroutes];
	if (str_copy(c->method, sizeof(c->method), method) != 0 ||
	    str_copy(c->path, sizeof(c->path), path) != 0 ||
	    (f = fopen(file, "rb")) == NULL)
		return -1;
	len = fread(c->raw, 1, sizeof(c->raw) - 1, f);
	fclose(f);
	if (ceil_parse(c, len) != 0)
		return -1;
	ceil_nroutes++;
	return 0;
}

/* The whole answer in one buffer and one mg_write(), as reply() does. */
static int
ceil_reply_one(struct mg_connection *conn, const struct ceil_canned *c)
{
	char buf[CEIL_MAX_RESPONSE], date[64];
	time_t now = time(NULL);
	struct tm tm;
	size_t n;
	int len;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	len = snprintf(buf, sizeof(buf), "HTTP/1.1 %d %s\r\n", c->status,
	    mg_get_response_code_text(conn, c->status));
	for (int h = 0; h < c->nheaders && len > 0 &&
	    (size_t)len < sizeof(buf); h++)
		len += snprintf(buf + len, sizeof(buf) - (size_t)len,
		    "%s: %s\r\n", c->name[h], c->value[h]);
	if (len > 0 && (size_t)len < sizeof(buf))
		len += snprintf(buf + len, sizeof(buf) - (size_t)len,
		    "Date: %s\r\nConnection: keep-alive\r\n\r\n", date);
	if (len < 0 || (size_t)len + c->body_len > sizeof(buf))
		return 500;
	n = (size_t)len;
	memcpy(buf + n, c->body, c->body_len);
	mg_write(conn, buf, n + c->body_len);
	return c->status;
}

static int
ceil_handler(struct mg_connection *conn, void *arg)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char body[OTP_MAX_BODY + 1];
	long long left = ri->content_length;

	(void)arg;
	while (left > 0) { /* read the body, as otp_demo must */
		int got = mg_read(conn, body, left < (long long)sizeof(body) ?
		    (size_t)left : sizeof(body));

		if (got <= 0)
			break;
		left -= got;
	}
	for (int i = 0; i < ceil_nroutes; i++) {
		const struct ceil_canned *c = &ceil_routes[i];

		if (strcmp(ri->request_method, c->method) != 0 ||
		    strcmp(ri->local_uri, c->path) != 0)
			continue;
		if (!ceil_headers)
			return ceil_reply_one(conn, c);
		mg_response_header_start(conn, c->status);
		for (int h = 0; h < c->nheaders; h++)
			mg_response_header_add(conn, c->name[h], c->value[h], -1);
		mg_response_header_send(conn);
		mg_write(conn, c->body, c->body_len);
		return c->status;
	}
	mg_send_http_error(conn, 404, "%s", "no such route");
	return 404;
}

int
main(int argc, char **argv)
{
	const char *opts[64];
	char err[OTP_MAX_STR + 128], threads[16];
	struct mg_server_port ports[16];
	static struct config cfg;
	struct mg_context *ctx;
	sigset_t sigs;
	int sig, n;

	if (argc > 1 && strcmp(argv[1], "-h") == 0) {
		ceil_headers = true;
		argv++, argc--;
	}
	if (argc < 6 || strcmp(argv[1], "-c") != 0 || (argc - 3) % 3 != 0) {
		fprintf(stderr, "usage: ceiling [-h] -c CONFIG METHOD PATH "
		    "RESPONSE...\n");
		return EXIT_USAGE;
	}
	if (config_load(&cfg, argv[2], err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	for (int i = 3; i + 2 < argc; i += 3)
		if (ceil_load(argv[i], argv[i + 1], argv[i + 2]) != 0) {
			fprintf(stderr, "ceiling: cannot load %s\n", argv[i + 2]);
			return EXIT_USAGE;
		}

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	mg_init_library(0);
	server_options(&cfg, opts, sizeof(opts) / sizeof(opts[0]), threads);
	if ((ctx = mg_start(NULL, NULL, opts)) == NULL) {
		fprintf(stderr, "ceiling: cannot start on %s\n", cfg.listen);
		return 1;
	}
	mg_set_request_handler(ctx, "/", ceil_handler, NULL);
	n = mg_get_server_ports(ctx, 16, ports);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "ceiling: listening on http://127.0.0.1:%d\n",
		    ports[i].port);
	sigwait(&sigs, &sig);
	mg_stop(ctx);
	mg_exit_library();
	return 0;
}

/*
 * deps/static/civetweb/external_mg_cry_internal_impl.inl: civetweb's error
 * reporter. Every build (the static ones first, hence the directory)
 * compiles civetweb with NO_FILESYSTEMS (12 KB less on armv6; no stat of
 * /.htpasswd per request), which has no error_log_file.
 * Included by civetweb.c (MG_EXTERNAL_FUNCTION_mg_cry_internal_impl).
 *
 * Same as civetweb's own for what otp_demo uses: the message goes to the
 * log_message callback (otp_demo's log); if there is none, or it declines
 * (returns 0), to stderr.
 */
static void
mg_cry_internal_impl(const struct mg_connection *conn,
                     const char *func,
                     unsigned line,
                     const char *fmt,
                     va_list ap)
{
	char buf[MG_BUF_LEN];

	(void)func;
	(void)line;
	IGNORE_UNUSED_RESULT(vsnprintf_impl(buf, sizeof(buf), fmt, ap));
	buf[sizeof(buf) - 1] = 0;
	if ((conn == NULL) || (conn->phys_ctx->callbacks.log_message == NULL)
	    || (conn->phys_ctx->callbacks.log_message(conn, buf) == 0)) {
		fprintf(stderr, "%s\n", buf);
	}
}

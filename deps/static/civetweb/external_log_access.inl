/*
 * deps/static/civetweb/external_log_access.inl: civetweb's access log
 * (NO_FILESYSTEMS, see external_mg_cry_internal_impl.inl).
 * Included by civetweb.c (MG_EXTERNAL_FUNCTION_log_access).
 *
 * Nothing: otp_demo sets neither access_log_file nor a log_access
 * callback, and logs the events that matter itself.
 */
static void
log_access(const struct mg_connection *conn)
{
	(void)conn;
}

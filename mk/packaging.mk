# mk/packaging.mk: the ways in (included by Makefile).
#
#   make examples         build/examples/embed: examples/embed.c with
#                         otp_demo.c compiled -DOTP_NO_MAIN
#   make install          binary, systemd unit, example config
#                         (PREFIX=/usr/local, DESTDIR, BINDIR, SYSCONFDIR,
#                         SYSTEMDUNITDIR, DOCDIR)
#   make test-packaging   tests/packaging/run.sh: exported symbols, embed,
#                         nginx forward-auth, OpenWrt init script and
#                         package, make install + systemd-analyze; ends
#                         "N passed, M failed"
#
# The OpenWrt package (packaging/openwrt/otp-demo) is built by OpenWrt's
# own build system, not from here.

EXAMPLES_DIR := $(BUILD)/examples
# otp_demo.c without main(), as a program that embeds it links it.
OTP_LIB_OBJ  := $(EXAMPLES_DIR)/otp_demo_lib.o

$(OTP_LIB_OBJ): otp_demo.c otp_demo.h numbering.h $(BUILD)/www_data.h \
		civetweb/include/civetweb.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -DOTP_NO_MAIN -c $< -o $@

$(EXAMPLES_DIR)/embed: examples/embed.c otp_demo.h $(OTP_LIB_OBJ) \
		$(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -I. $(LDFLAGS) -o $@ \
		examples/embed.c $(OTP_LIB_OBJ) $(BUILD)/civetweb.o $(LIBS)

.PHONY: examples install test-packaging
examples: $(EXAMPLES_DIR)/embed

# ---- install ---------------------------------------------------------------
# The unit in packaging/systemd names /usr/local/bin and /etc; install
# rewrites both to BINDIR and SYSCONFDIR. config.cfg itself is never
# installed or overwritten: copy config.cfg.example to it.

PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
SYSCONFDIR     ?= /etc
DOCDIR         ?= $(PREFIX)/share/doc/otp_demo
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install

install: otp_demo
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/otp_demo
	$(INSTALL) -m 0755 otp_demo $(DESTDIR)$(BINDIR)/otp_demo
	sed -e 's|/usr/local/bin/otp_demo|$(BINDIR)/otp_demo|g' \
	    -e 's|/etc/otp_demo/|$(SYSCONFDIR)/otp_demo/|g' \
	    -e 's|/usr/local/share/doc/otp_demo|$(DOCDIR)|g' \
		packaging/systemd/otp_demo.service \
		> $(DESTDIR)$(SYSTEMDUNITDIR)/otp_demo.service.tmp
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/otp_demo.service.tmp
	mv -f $(DESTDIR)$(SYSTEMDUNITDIR)/otp_demo.service.tmp \
		$(DESTDIR)$(SYSTEMDUNITDIR)/otp_demo.service
	$(INSTALL) -m 0644 config.cfg.example $(DESTDIR)$(DOCDIR)/config.cfg.example
	$(INSTALL) -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	$(INSTALL) -m 0644 config.cfg.example \
		$(DESTDIR)$(SYSCONFDIR)/otp_demo/config.cfg.example

# ---- tests -----------------------------------------------------------------

test-packaging: otp_demo $(EXAMPLES_DIR)/embed $(OTP_LIB_OBJ)
	OTP_BIN=$(abspath $(BUILD)/otp_demo) \
	EMBED_BIN=$(abspath $(EXAMPLES_DIR)/embed) \
	OTP_LIB_OBJ=$(abspath $(OTP_LIB_OBJ)) \
		tests/packaging/run.sh

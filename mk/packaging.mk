# mk/packaging.mk: the ways in (included by Makefile).
#
#   make examples         build/examples/embed: examples/embed.c with
#                         otp_demo.c compiled -DOTP_NO_MAIN
#   make install          binary, systemd unit, example config, LICENSE
#                         and the third-party notices
#                         (PREFIX=/usr/local, DESTDIR, BINDIR, SYSCONFDIR,
#                         SYSTEMDUNITDIR, DOCDIR)
#   make test-packaging   tests/packaging/run.sh: exported symbols, embed,
#                         nginx and Caddy forward-auth, OpenWrt init
#                         script and package, make install +
#                         systemd-analyze; ends "N passed, M failed"
#
#   make dist             build/dist/otp_demo-VERSION.tar.gz: the release
#                         tarball of the last commit (git archive; the
#                         same commit gives the same bytes)
#   make openwrt-feed     build/openwrt-feed/: a feed for OpenWrt's
#                         scripts/feeds with packaging/openwrt/otp-demo,
#                         its PKG_VERSION and PKG_HASH set for that tarball
#                         and PKG_SOURCE_URL to RELEASE_URL (where it is
#                         published; until then, put the tarball in
#                         OpenWrt's dl/). FEED_DIR= and DIST_DIR= move them.
#
# The OpenWrt package itself is built by OpenWrt's build system.

# ---- licence notices -------------------------------------------------------
# What a binary bundles, with each project's own licence file
# (tools/notices.sh): the dynamic build compiles civetweb in and links the
# system's mbedTLS and libcurl. notices.h is otp_notices[], printed by
# otp_demo --licenses; notices.txt ships beside the binary. The static
# builds make their own (mk/static.mk), with mbedTLS, curl and musl too.
# civetweb's LICENSE.md also holds the licences of its optional parts
# (Lua, SQLite, Duktape, ...), none of them built here: only its own part,
# up to the "Lua License" heading, is owed.
CW_VERSION   := $(shell cat civetweb/VERSION)
CW_LICENSE   := $(BUILD)/civetweb-LICENSE.md
NOTICES_SELF := "otp_demo|$(VERSION)|MIT|LICENSE"
NOTICES_CW   := "civetweb|$(CW_VERSION)|MIT|$(CW_LICENSE)"
NOTICES_USES := --uses "It links the system's mbed TLS and libcurl, whose licences come with them."
NOTICES_USES_REDIS := --uses "It links the system's mbed TLS, libcurl and hiredis, whose licences come with them."
# The build with the Redis store links hiredis too: its own notices, in
# $(BUILD)/redis/ beside its www_data.h (found first by its compiler).
NOTICES_TXT := $(BUILD)/$(if $(WITH_REDIS),redis/)notices.txt

$(CW_LICENSE): $(CW_STAMP)
	@mkdir -p $(@D)
	sed '/^Lua License/,$$d' civetweb/LICENSE.md > $@.tmp
	grep -q 'Civetweb License' $@.tmp
	mv -f $@.tmp $@
$(BUILD)/notices.h: LICENSE tools/notices.sh $(CW_LICENSE)
	@mkdir -p $(@D)
	tools/notices.sh c $(NOTICES_USES) $(NOTICES_SELF) $(NOTICES_CW) > $@.tmp
	mv -f $@.tmp $@
$(BUILD)/notices.txt: LICENSE tools/notices.sh $(CW_LICENSE)
	@mkdir -p $(@D)
	tools/notices.sh text $(NOTICES_USES) $(NOTICES_SELF) $(NOTICES_CW) > $@.tmp
	mv -f $@.tmp $@
$(BUILD)/redis/notices.h: LICENSE tools/notices.sh $(CW_LICENSE)
	@mkdir -p $(@D)
	tools/notices.sh c $(NOTICES_USES_REDIS) $(NOTICES_SELF) $(NOTICES_CW) > $@.tmp
	mv -f $@.tmp $@
$(BUILD)/redis/notices.txt: LICENSE tools/notices.sh $(CW_LICENSE)
	@mkdir -p $(@D)
	tools/notices.sh text $(NOTICES_USES_REDIS) $(NOTICES_SELF) $(NOTICES_CW) > $@.tmp
	mv -f $@.tmp $@
$(BUILD)/otp_demo.o: $(BUILD)/notices.h
$(BUILD)/otp_demo-redis.o $(BUILD)/model-redis: $(BUILD)/redis/notices.h

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

.PHONY: examples install test-packaging dist openwrt-feed
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

install: otp_demo $(NOTICES_TXT)
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
	$(INSTALL) -m 0644 LICENSE $(DESTDIR)$(DOCDIR)/LICENSE
	$(INSTALL) -m 0644 $(NOTICES_TXT) $(DESTDIR)$(DOCDIR)/NOTICES
	$(INSTALL) -m 0644 config.cfg.example \
		$(DESTDIR)$(SYSCONFDIR)/otp_demo/config.cfg.example

# ---- tests -----------------------------------------------------------------

test-packaging: otp_demo $(EXAMPLES_DIR)/embed $(OTP_LIB_OBJ)
	OTP_BIN=$(abspath $(BUILD)/otp_demo) \
	EMBED_BIN=$(abspath $(EXAMPLES_DIR)/embed) \
	OTP_LIB_OBJ=$(abspath $(OTP_LIB_OBJ)) \
		tests/packaging/run.sh

# ---- release tarball and OpenWrt feed ----------------------------------------

DIST_DIR    ?= build/dist
DIST_TAR    := $(DIST_DIR)/otp_demo-$(VERSION).tar.gz
FEED_DIR    ?= build/openwrt-feed
RELEASE_URL ?= https://otp-demo.invalid/releases/v$(VERSION)/

# gzip -n and git's commit times: no date of today in the bytes.
dist:
	@mkdir -p $(DIST_DIR)
	git archive --format=tar --prefix=otp_demo-$(VERSION)/ HEAD | \
		gzip -9n > $(DIST_TAR).tmp
	@mv -f $(DIST_TAR).tmp $(DIST_TAR)
	@echo "dist: $(DIST_TAR) (HEAD $$(git rev-parse --short HEAD)," \
		"sha256 $$(sha256sum $(DIST_TAR) | cut -d' ' -f1))"

openwrt-feed: dist
	rm -rf $(FEED_DIR)
	@mkdir -p $(FEED_DIR)
	cp -R packaging/openwrt/otp-demo $(FEED_DIR)/
	sed -i -e 's|^PKG_VERSION:=.*|PKG_VERSION:=$(VERSION)|' \
	    -e "s|^PKG_HASH:=.*|PKG_HASH:=$$(sha256sum $(DIST_TAR) | cut -d' ' -f1)|" \
	    -e 's|^PKG_SOURCE_URL:=.*|PKG_SOURCE_URL:=$(RELEASE_URL)|' \
	    -e 's|^CIVETWEB_VERSION:=.*|CIVETWEB_VERSION:=$(CW_VERSION)|' \
		$(FEED_DIR)/otp-demo/Makefile
	@echo "openwrt-feed: $(FEED_DIR); in OpenWrt's feeds.conf:" \
		"src-link otp $(abspath $(FEED_DIR))"
	@case '$(RELEASE_URL)' in *.invalid/*) echo "openwrt-feed: RELEASE_URL" \
		"not set: copy $(DIST_TAR) into OpenWrt's dl/ before building" ;; esac

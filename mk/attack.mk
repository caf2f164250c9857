# mk/attack.mk: the transport attack tests (included by Makefile).
#
#   make test-attack-transport  framing straight at the server, IPv6, and
#                               slow and many connections (tests/attack/;
#                               also in the "attack" suite of make test)
#   make test-desync            every framing variant through Debian's
#                               nginx and HAProxy, set up as README says
#
# ATTACK_BIN=path runs them against another build, such as a static one
# (make test-static ARCH=x86_64 runs framing and slow against its own).

.PHONY: test-attack-transport test-desync deps-attack

ATTACK_BIN ?= $(CURDIR)/$(BUILD)/otp_demo

# The attack set is the test set plus HAProxy (tools/deps.sh).
deps-attack: deps-test
	@tools/deps.sh attack

test-attack-transport: $(BUILD)/otp_demo | deps-test
	OTP_BIN=$(ATTACK_BIN) ATTACKS="framing ipv6 slow" tests/attack/run.sh

test-desync: $(BUILD)/otp_demo | deps-attack
	OTP_BIN=$(ATTACK_BIN) ATTACKS=desync tests/attack/run.sh

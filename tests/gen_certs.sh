#!/bin/sh
# gen_certs.sh OUTDIR: test certificates for the fake SMS API (tests only).
#
#   ca.pem                      test CA (SMS_CA_FILE in the tests)
#   server.pem  server.key      signed by ca.pem, SAN IP:127.0.0.1, DNS:localhost
#   rogue.pem   rogue.key       signed by an unrelated CA (rogue_ca.pem), 127.0.0.1
#   wronghost.pem wronghost.key signed by ca.pem, SAN DNS:wrong.example only
#   expired.pem expired.key     signed by ca.pem, 127.0.0.1, validity in the past
#
# EC P-256 keys (fast). Idempotent: does nothing if every file exists and the
# server cert still verifies against the CA.
set -eu

out=${1:?usage: gen_certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"

files="ca.pem server.pem server.key rogue.pem rogue.key wronghost.pem \
wronghost.key expired.pem expired.key"
all=1
for f in $files; do [ -s "$f" ] || all=0; done
if [ $all = 1 ] && openssl verify -CAfile ca.pem server.pem >/dev/null 2>&1 \
    && openssl x509 -in server.pem -noout -checkend 86400 >/dev/null 2>&1; then
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gen_certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	-out "$1" 2>/dev/null; }

# ca NAME CN: self-signed CA
ca() {
	key "$tmp/$1.key"
	openssl req -x509 -new -key "$tmp/$1.key" -sha256 -days 3650 \
		-subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$tmp/$1.pem"
}

# leaf NAME CANAME SAN: key + cert signed by CANAME, valid now
leaf() {
	key "$tmp/$1.key"
	openssl req -new -key "$tmp/$1.key" -subj "/CN=$1" -out "$tmp/$1.csr"
	printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
		"$3" > "$tmp/$1.ext"
	openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/$2.pem" \
		-CAkey "$tmp/$2.key" -set_serial "0x$(openssl rand -hex 8)" \
		-sha256 -days 825 -extfile "$tmp/$1.ext" -out "$tmp/$1.pem" \
		2>/dev/null
}

ca ca "otp_demo test CA"
ca rogue_ca "unknown test CA"
leaf server ca "IP:127.0.0.1,DNS:localhost"
leaf rogue rogue_ca "IP:127.0.0.1,DNS:localhost"
leaf wronghost ca "DNS:wrong.example"

# expired: OpenSSL 3.0's "x509 -req" has no -not_before/-not_after, so use
# "openssl ca", which takes explicit -startdate/-enddate.
key "$tmp/expired.key"
openssl req -new -key "$tmp/expired.key" -subj "/CN=expired" \
	-out "$tmp/expired.csr"
mkdir -p "$tmp/db"
: > "$tmp/db/index.txt"
openssl rand -hex 8 > "$tmp/db/serial"
cat > "$tmp/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $tmp/db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
x509_extensions = leaf_ext
[ any ]
commonName = supplied
[ leaf_ext ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
CNF
openssl ca -batch -config "$tmp/ca.cnf" -cert "$tmp/ca.pem" \
	-keyfile "$tmp/ca.key" -in "$tmp/expired.csr" -out "$tmp/expired.pem" \
	-startdate 20200101000000Z -enddate 20200201000000Z -notext \
	>/dev/null 2>&1

# Move into place last, so an interrupted run never leaves a half set.
for f in ca.pem rogue_ca.pem server.pem server.key rogue.pem rogue.key \
	wronghost.pem wronghost.key expired.pem expired.key; do
	mv "$tmp/$f" "$f"
done
chmod 600 ./*.key

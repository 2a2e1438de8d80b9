#!/bin/sh
# Creates the secrets of box clinic-0007 under ./secrets: random values, mode 0600, owned by the
# user the containers run as (10001). An existing file is never overwritten, so running it
# again is safe. To rotate api_key, tls_cert/tls_key or hf_token, delete its file and run it again
# (README: Rotate secrets). The Grafana and Open WebUI admin passwords are applied only when their
# data volume is new: once it holds data this script refuses to recreate them (the README says how
# to change them in the running service). Run it as root before `docker compose up -d`. Secrets
# never go into the bundle, the compose file or .env.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 0700 secrets

random_hex() {
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

finish() {
  chmod 0600 "$1"
  if ! chown 10001:10001 "$1" 2>/dev/null; then
    echo "error: cannot give $1 to uid 10001; run as root: sudo ./init-secrets.sh" >&2
    exit 1
  fi
}

# A deleted admin password whose service already has its data: a new file would not change the
# password the service keeps in its database, and the old one would be lost (edge review E9).
refuse_if_in_use() {
  if [ ! -e "secrets/$1" ] && command -v docker >/dev/null 2>&1 \
    && docker volume inspect "clinic-0007_$2" >/dev/null 2>&1; then
    echo "error: secrets/$1 is missing but the volume clinic-0007_$2 holds the service's data, which keeps the old password; restore the file, or change the password in the service (README: Rotate secrets)" >&2
    exit 1
  fi
}

create() {
  if [ -e "secrets/$1" ]; then
    echo "kept    secrets/$1"
    return 0
  fi
  printf '%s' "$2" > "secrets/$1"
  finish "secrets/$1"
  echo "created secrets/$1"
}

create api_key "$(random_hex)"
refuse_if_in_use grafana_admin_password grafana-data
create grafana_admin_password "$(random_hex)"

if [ ! -e secrets/tls_cert ] || [ ! -e secrets/tls_key ]; then
  # A self-signed certificate for the gateway; replace both files with your own to use a real one.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
    -subj "/CN=clinic-0007" -addext "subjectAltName=DNS:clinic-0007,DNS:localhost,IP:127.0.0.1" \
    -keyout secrets/tls_key -out secrets/tls_cert 2>/dev/null
  finish secrets/tls_key
  finish secrets/tls_cert
  echo "created secrets/tls_cert and secrets/tls_key (self-signed)"
else
  echo "kept    secrets/tls_cert and secrets/tls_key"
fi
# The certificate is public: a readable copy for clients (`curl --cacert gateway/tls_cert.pem`).
mkdir -p gateway
cp secrets/tls_cert gateway/tls_cert.pem
chmod 0644 gateway/tls_cert.pem

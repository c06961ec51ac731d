#!/usr/bin/env bash
# Installs what vbm needs from Debian's packages (and, for the tests, Azurite from npm, as
# node/package-lock.json pins it), only when it is missing, and starts PostgreSQL for the tests
# when none answers on 127.0.0.1:5432. Safe to run again; prints what it does. The packages and
# their minimum versions: docs/testing.md, "What the install fetches".
#   scripts/install-system-deps.sh [--for-tests]
set -euo pipefail

for_tests=0
[ "${1:-}" = "--for-tests" ] && for_tests=1

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "install-system-deps: need root (or sudo) to run: $*" >&2; exit 1
  fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    echo "install-system-deps: apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  echo "install-system-deps: apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || missing+=(golang-github-vmware-govmomi-dev)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# rclone (the rclone:// backend, and its tests' WebDAV server); Azurite (Azure Blob for the tests)
# from the npm registry, into var/node; Node.js from Debian.
command -v rclone >/dev/null 2>&1 || apt_install rclone
if [ "$for_tests" = 1 ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  # the web UI's browser tests: Playwright (from the lock) drives Debian's chromium
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  # metrics and alert rules checked by Prometheus' own promtool; the mount manager's tests: a real
  # Samba server (smbd), SMB through FUSE (smbnetfs), NFS-Ganesha and libnfs's user-space client
  more=()
  command -v promtool >/dev/null 2>&1 || more+=(prometheus)
  command -v smbd >/dev/null 2>&1 || more+=(samba)
  command -v smbnetfs >/dev/null 2>&1 || more+=(smbnetfs)
  command -v ganesha.nfsd >/dev/null 2>&1 || more+=(nfs-ganesha nfs-ganesha-vfs)
  command -v nfs-ls >/dev/null 2>&1 || more+=(libnfs-utils)
  # sendmail channels: Debian's msmtp as a real sendmail program (tests/notify/test_sendmail.py)
  command -v msmtp >/dev/null 2>&1 || more+=(msmtp)
  [ ${#more[@]} -eq 0 ] || apt_install "${more[@]}"
  # Exactly what node/package-lock.json says (npm ci checks every package's integrity hash);
  # again whenever the lock changes.
  want=$(cat node/package.json node/package-lock.json | sha256sum | cut -c1-64)
  if [ "$(cat var/node/.lock 2>/dev/null)" != "$want" ] || [ ! -x var/node/node_modules/.bin/azurite-blob ]; then
    echo "install-system-deps: npm ci (node/package-lock.json) into var/node"
    mkdir -p var/node
    cp node/package.json node/package-lock.json var/node/
    npm ci --prefix var/node --no-audit --no-fund --loglevel=error >/dev/null
    echo "$want" > var/node/.lock
  fi
fi

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if [ "$for_tests" = 1 ] && [ -z "${VBM_TEST_PG_ADMIN_URL:-}" ] && ! pg_up; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "install-system-deps: starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "install-system-deps: PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
  # Tests connect as the postgres role over TCP; allow it without a password on loopback only.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q "vbm-tests" "$hba"; then
    as_root sed -i '1i host all postgres 127.0.0.1/32 trust # vbm-tests' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
fi
exit 0

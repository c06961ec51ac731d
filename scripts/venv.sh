#!/usr/bin/env bash
# Makes .venv from the lock and nothing else: every package at its locked version, its hash
# checked (pip --require-hashes), the project itself installed without touching the index
# (--no-deps --no-build-isolation: setuptools comes from the lock too).
#   scripts/venv.sh runtime   what `make up` needs (requirements/runtime.txt)
#   scripts/venv.sh dev       plus the tests' and the linters' (requirements/dev.txt)
# A venv made from another version of the lock is made again from scratch, so a package the new
# lock dropped, or one installed by hand, does not stay behind. .venv/.lock records what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."

want=${1:-dev}
venv=${VENV:-.venv}
python=${PYTHON:-python3}
case "$want" in
  dev|runtime) lock=requirements/$want.txt ;;
  *) echo "venv: say dev or runtime" >&2; exit 2 ;;
esac

sum() { sha256sum "$1" | cut -c1-64; }
stamp=$venv/.lock
have=$(cat "$stamp" 2>/dev/null || true)
dev_sum=$(sum requirements/dev.txt)
runtime_sum=$(sum requirements/runtime.txt)

# Up to date: a dev venv serves both; a runtime venv serves runtime.
[ "$have" = "dev $dev_sum" ] && [ -x "$venv/bin/python" ] && exit 0
[ "$want" = runtime ] && [ "$have" = "runtime $runtime_sum" ] && [ -x "$venv/bin/python" ] && exit 0

if [ -n "$have" ] && [ "$have" != "runtime $runtime_sum" ]; then
  echo "venv: $venv was made from another lock; making it again"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "venv: vbm needs Python 3.11 or newer; $python is $("$python" --version 2>&1)." \
      "Set PYTHON=python3.11 (or newer)." >&2
    exit 1
  }
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
echo "venv: installing $lock into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
  -r "$lock"
# setuptools warns about every editable install on stderr; show its output only when it fails.
log=$(mktemp)
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation --editable . >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
if [ "$want" = dev ]; then echo "dev $dev_sum" > "$stamp"; else echo "runtime $runtime_sum" > "$stamp"; fi

#!/usr/bin/env bash
# Writes the lock: requirements/dev.txt (runtime, dev extra and the build group) and
# requirements/runtime.txt (runtime and the build group), every package with its exact version
# and the hashes of all its files, for every platform and Python >= 3.11 (a universal resolution).
# Runtime is resolved with dev's versions as constraints, so both files agree on every version.
#
#   scripts/lock.sh                 resolve what pyproject.toml changed, keep every other pin
#   scripts/lock.sh --upgrade       move everything to the newest release its range allows
#   scripts/lock.sh --upgrade-package NAME [...]   only those
#
# uv comes from the dev lock itself (.venv/bin/uv): `make lock` installs the venv first. After a
# refresh, run the whole suite on the new lock (`make test`) before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-.venv/bin/uv}
[ -x "$uv" ] || { echo "lock: $uv is missing: run \`make venv\` first" >&2; exit 1; }
export UV_PYTHON_DOWNLOADS=never

extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --upgrade) extra+=(--upgrade) ;;
    --upgrade-package) shift; extra+=(--upgrade-package "$1") ;;
    *) echo "lock: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

common=(--universal --python-version 3.11 --generate-hashes --quiet
        --custom-compile-command "make lock")
"$uv" pip compile pyproject.toml --extra dev --group pyproject.toml:build "${common[@]}" \
  ${extra[@]+"${extra[@]}"} -o requirements/dev.txt

pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' requirements/dev.txt | sed -E 's/ *\\$//' > "$pins"
"$uv" pip compile pyproject.toml --group pyproject.toml:build "${common[@]}" \
  --constraint "$pins" -o requirements/runtime.txt
# uv names the constraint file it was given: name the pins' origin, not a temporary path that
# would change the file at every lock
sed -i "s|$pins|requirements/dev.txt (its pins)|" requirements/runtime.txt

echo "lock: requirements/dev.txt $(grep -cE '^[A-Za-z0-9_.-]+==' requirements/dev.txt) packages," \
  "requirements/runtime.txt $(grep -cE '^[A-Za-z0-9_.-]+==' requirements/runtime.txt)"
git --no-pager diff --stat -- requirements/ 2>/dev/null || true

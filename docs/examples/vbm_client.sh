#!/usr/bin/env bash
# An example client of vbm's REST API with curl (and jq to read JSON): creates a backup job, runs
# it, follows the run over Server-Sent Events until it ends, then prints the manifest of each
# restore point the run made (every file with its SHA-256). The same steps as vbm_client.py.
#
#   VBM_KEY=vbm_... docs/examples/vbm_client.sh VCENTER VM [REPOSITORY]
#
# VBM_URL is the gateway (default http://127.0.0.1:8420). Progress goes to stderr, the manifests
# to stdout. The shapes are in the API reference (GET /api/v1/docs) and docs/api.md.
set -euo pipefail

vcenter=${1:?usage: $0 VCENTER VM [REPOSITORY]}
vm=${2:?usage: $0 VCENTER VM [REPOSITORY]}
repository=${3:-}
api="${VBM_URL:-http://127.0.0.1:8420}/api/v1"
key=${VBM_KEY:?set VBM_KEY to an API key (vbm apikey create NAME makes one)}

say() { echo "$*" >&2; }

# One request: the answer's JSON on stdout; an error answer (application/problem+json) is said
# with its detail and ends the script.
call() {
  local method=$1 path=$2
  shift 2
  local out status
  out=$(curl -sS -X "$method" -H "X-API-Key: $key" -H 'Accept: application/json' \
    -w '\n%{http_code}' "$@" "$api$path")
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  if [ "$status" -ge 400 ]; then
    say "$method $path: $status $(jq -r '.detail // empty' <<<"$out" 2>/dev/null || echo "$out")"
    exit 1
  fi
  printf '%s\n' "$out"
}

name="example-$(date +%s)"
spec=$(jq -n --arg name "$name" --arg vc "$vcenter" --arg vm "$vm" --arg repo "$repository" \
  '{name: $name, vcenter: $vc, vms: [{name: $vm}]} + (if $repo == "" then {} else {repository: $repo} end)')
job_id=$(call POST /jobs -H 'Content-Type: application/json' -d "$spec" | jq -r .id)
say "job $name ($job_id) created"

# The same Idempotency-Key on a retry answers the first 202 again: no second run.
idempotency_key=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || date +%s%N)
run_id=$(call POST "/jobs/$job_id/run" -H "Idempotency-Key: $idempotency_key" | jq -r .run_id)
say "run $run_id started"

# Follow the run: each event is "event: TYPE" and "data: JSON" lines, then a blank line. Once the
# stream says ": connected" it is subscribed: ask for the run then, in case it ended before.
exec 3< <(curl -sSN -H "X-API-Key: $key" -H 'Accept: text/event-stream' "$api/events?run=$run_id")
events_pid=$!
state=""
event=""
while IFS= read -r line <&3; do
  line=${line%$'\r'}
  case $line in
    ": connected")
      run=$(call GET "/runs/$run_id")
      if [ "$(jq -r .finished <<<"$run")" = true ]; then state=$(jq -r .state <<<"$run"); break; fi ;;
    "event: "*) event=${line#event: } ;;
    "data: "*)
      data=${line#data: }
      case $event in
        task.state) say "  $(jq -r '"\(.vm_name): \(.phase) (\(.state))"' <<<"$data")" ;;
        run.state)
          state=$(jq -r .state <<<"$data")
          say "run $run_id: $state"
          case $state in succeeded|warning|partial|failed|cancelled) break ;; esac ;;
      esac ;;
  esac
done
kill "$events_pid" 2>/dev/null || true
exec 3<&-
[ -n "$state" ] || { say "the event stream ended before the run did"; exit 1; }

for rp in $(call GET "/runs/$run_id" | jq -r '.tasks[].restore_point_id // empty'); do
  call GET "/backups/$rp/manifest.json" | jq .
done
case $state in succeeded|warning) exit 0 ;; *) exit 1 ;; esac

#!/usr/bin/env bash
# Smoke test of a running engine's REST API with the facts camunda-worker relies on.
#
#   engine/smoke.sh [ENGINE_REST_URL]      default http://127.0.0.1:${ENGINE_PORT:-8080}/engine-rest
#
#   SMOKE_AUTH=1   the engine runs with basic auth (ENGINE_BASIC_AUTH=1): also test 401s, use demo/demo
#   SMOKE_JSON=0   skip the Json variable check (operaton flavor: no Spin JSON data format)
#   SMOKE_BPMN=path  the BPMN to deploy (default: bpmn/message-correlation.bpmn of this repo)
# Prints one line per check and "N passed, N failed"; exits 1 if any check failed.
# Needs curl and python3. Deploys bpmn/message-correlation.bpmn (duplicate filtering on).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
B=${1:-http://127.0.0.1:${ENGINE_PORT:-8080}/engine-rest}
BPMN=${SMOKE_BPMN:-$ROOT/bpmn/message-correlation.bpmn}
CURL=(curl -s --max-time 30)
[[ "${SMOKE_AUTH:-0}" == 1 ]] && CURL+=(-u demo:demo)
RUN="smoke-$$-$RANDOM"
PASSED=0
FAILED=0

check() { # name condition-result(0/1) detail
  if [[ "$2" == 0 ]]; then
    PASSED=$((PASSED + 1)); printf 'ok    %s\n' "$1"
  else
    FAILED=$((FAILED + 1)); printf 'FAIL  %s: %s\n' "$1" "$3"
  fi
}
# req METHOD PATH [JSON] -> sets CODE and BODY
req() {
  local out
  if [[ $# -ge 3 ]]; then
    out=$("${CURL[@]}" -X "$1" -H 'Content-Type: application/json' -d "$3" -w '\n%{http_code}' "$B$2")
  else
    out=$("${CURL[@]}" -X "$1" -w '\n%{http_code}' "$B$2")
  fi
  BODY=${out%$'\n'*}
  CODE=${out##*$'\n'}
}
# expect NAME CODE [BODY_SUBSTRING]
expect() {
  local ok=0
  [[ "$CODE" == "$2" ]] || ok=1
  [[ $# -lt 3 || "$BODY" == *"$3"* ]] || ok=1
  check "$1" "$ok" "got $CODE ${BODY:0:300}"
}
py() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); $1" "$BODY"; }
start() { # business key -> prints instance id
  req POST /process-definition/key/message_correlation/start "{\"businessKey\":\"$1\"}"
  py 'print(d["id"])'
}
fetch() { # worker business-key lock-ms -> prints task id ("" if none)
  req POST /external-task/fetchAndLock "{\"workerId\":\"$1\",\"maxTasks\":1,\"topics\":[{\"topicName\":\"messageSending\",\"lockDuration\":$3,\"businessKey\":\"$2\"}]}"
  py 'print(d[0]["id"] if d else "")'
}
complete() { req POST "/external-task/$1/complete" '{"workerId":"w1"}'; }

# --- deploy -------------------------------------------------------------------------------------
out=$("${CURL[@]}" -w '\n%{http_code}' -F deployment-name=message-correlation \
  -F enable-duplicate-filtering=true -F "data=@$BPMN;filename=message-correlation.bpmn" \
  "$B/deployment/create")
BODY=${out%$'\n'*}; CODE=${out##*$'\n'}
expect "deploy (duplicate filtering)" 200 '"name":"message-correlation"'

# --- happy path ---------------------------------------------------------------------------------
PI=$(start "$RUN-ok")
T=$(fetch w1 "$RUN-ok" 60000)
req GET "/external-task/$T"
expect "fetchAndLock locked the task for w1" 200 "\"workerId\":\"w1\",\"topicName\":\"messageSending\""
VARS='"var1":{"type":"Integer","value":1},"var2":{"type":"String","value":"value"}'
[[ "${SMOKE_JSON:-1}" == 1 ]] && VARS+=',"var3":{"type":"Json","value":"{\"a\":[1,2]}"}'
req POST "/external-task/$T/complete" "{\"workerId\":\"w1\",\"variables\":{$VARS}}"
expect "complete with typed variables" 204
req GET "/event-subscription?eventType=message&eventName=sample_response&processInstanceId=$PI"
expect "event subscription at wait_for_response" 200 '"activityId":"wait_for_response"'
req POST /message "{\"messageName\":\"sample_response\",\"businessKey\":\"$RUN-ok\"}"
expect "message by business key" 204
req GET "/history/process-instance?processInstanceBusinessKey=$RUN-ok"
expect "history: COMPLETED" 200 '"state":"COMPLETED"'
req GET "/history/variable-instance?processInstanceId=$PI&variableName=var1"
expect "history: var1 is Integer 1" 200 '"type":"Integer","value":1'
if [[ "${SMOKE_JSON:-1}" == 1 ]]; then
  req GET "/history/variable-instance?processInstanceId=$PI&variableName=var3&deserializeValues=false"
  expect "history: var3 is Json" 200 '"type":"Json","value":"{\"a\":[1,2]}"'
fi

# --- message correlation errors -----------------------------------------------------------------
start "$RUN-early" >/dev/null
req POST /message "{\"messageName\":\"sample_response\",\"businessKey\":\"$RUN-early\"}"
expect "message before the catch event: 400 no match" 400 'MismatchingMessageCorrelationException: Cannot correlate message'
for _ in 1 2; do
  start "$RUN-dup" >/dev/null
  complete "$(fetch w1 "$RUN-dup" 60000)"
done
req POST /message "{\"messageName\":\"sample_response\",\"businessKey\":\"$RUN-dup\"}"
expect "message to two waiting instances: 400 ENGINE-13031" 400 'ENGINE-13031'
PI=$(start "$RUN-byid")
complete "$(fetch w1 "$RUN-byid" 60000)"
req POST /message "{\"messageName\":\"sample_response\",\"processInstanceId\":\"$PI\"}"
expect "message by processInstanceId" 204

# --- external task errors -----------------------------------------------------------------------
req POST /external-task/00000000-0000-0000-0000-000000000000/complete '{"workerId":"w1"}'
expect "complete unknown task: 404" 404 'does not exist'
start "$RUN-lock" >/dev/null
T=$(fetch w1 "$RUN-lock" 60000)
req POST "/external-task/$T/complete" '{"workerId":"w2"}'
expect "complete by another worker: 400" 400 "It is locked by worker 'w1'"
req POST "/external-task/$T/extendLock" '{"workerId":"w1","newDuration":120000}'
expect "extendLock" 204
req POST "/external-task/$T/unlock"
expect "unlock" 204
PI=$(start "$RUN-fail")
T=$(fetch w1 "$RUN-fail" 60000)
req POST "/external-task/$T/failure" '{"workerId":"w1","errorMessage":"boom","retries":0,"retryTimeout":0}'
expect "failure with retries 0" 204
req GET "/incident?processInstanceId=$PI"
expect "incident created" 200 '"incidentType":"failedExternalTask"'
req POST /external-task/fetchAndLock '{"workerId":"w1","maxTasks":1,"asyncResponseTimeout":1800001,"topics":[{"topicName":"messageSending","lockDuration":1000}]}'
expect "asyncResponseTimeout > 1800000: 400" 400 'greater than 1800000'
req POST /external-task/fetchAndLock '{"maxTasks":1,"topics":[{"topicName":"messageSending","lockDuration":1000}]}'
expect "fetchAndLock without workerId: 500" 500 'workerId is null'

# --- long polling -------------------------------------------------------------------------------
tmp=$(mktemp)
(
  "${CURL[@]}" -o "$tmp" -H 'Content-Type: application/json' -d "{\"workerId\":\"lp\",\"maxTasks\":1,\"asyncResponseTimeout\":20000,\"topics\":[{\"topicName\":\"messageSending\",\"lockDuration\":60000,\"businessKey\":\"$RUN-lp\"}]}" \
    "$B/external-task/fetchAndLock"
) &
poll=$!
sleep 2
started=$(date +%s%N)
start "$RUN-lp" >/dev/null
wait "$poll"
ms=$((($(date +%s%N) - started) / 1000000))
check "parked long poll returns when an instance starts (${ms} ms)" \
  "$([[ "$(cat "$tmp")" == *"$RUN-lp"* && $ms -lt 5000 ]] && echo 0 || echo 1)" "$(cat "$tmp") after ${ms} ms"
rm -f "$tmp"

# --- basic auth ---------------------------------------------------------------------------------
if [[ "${SMOKE_AUTH:-0}" == 1 ]]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' "$B/engine")
  check "auth: GET /engine anonymous 200" "$([[ $code == 200 ]] && echo 0 || echo 1)" "got $code"
  hdrs=$(curl -s -i -H 'Content-Type: application/json' -d '{"workerId":"w","maxTasks":1,"topics":[]}' "$B/external-task/fetchAndLock")
  check "auth: no credentials 401 + WWW-Authenticate" \
    "$([[ "$hdrs" == "HTTP/1.1 401"* && "$hdrs" == *'WWW-Authenticate: Basic realm="default"'* ]] && echo 0 || echo 1)" "${hdrs:0:200}"
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "nobody-$RUN:x" -H 'Content-Type: application/json' -d '{"workerId":"w","maxTasks":1,"topics":[]}' "$B/external-task/fetchAndLock")
  check "auth: unknown user 401" "$([[ $code == 401 ]] && echo 0 || echo 1)" "got $code"
fi

printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
[[ $FAILED == 0 ]]

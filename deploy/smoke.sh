#!/usr/bin/env bash
# Smoke-test a running receiver as Replicate uses it: a signed delivery must be accepted and
# readable through the read API, and a delivery signed with another secret refused.
#
#   deploy/smoke.sh https://hooks.example.com
#
# Environment: REPLICATE_WEBHOOK_SECRET (the receiver's), RECEIVER_API_TOKEN (its read token),
# RECEIVER_CLI (how to run `python -m receiver`; CI runs it from the image), CURL_CA (a CA file
# when the certificate is not publicly trusted, as Caddy's `tls internal` one).
set -euo pipefail
base=${1:?usage: deploy/smoke.sh BASE_URL}
: "${REPLICATE_WEBHOOK_SECRET:?set REPLICATE_WEBHOOK_SECRET}" "${RECEIVER_API_TOKEN:?set RECEIVER_API_TOKEN}"
read -r -a cli <<<"${RECEIVER_CLI:-python -m receiver}"
curl_opts=(--fail-with-body --silent --show-error --max-time 30
    -H "Authorization: Bearer $RECEIVER_API_TOKEN")
if [ -n "${CURL_CA:-}" ]; then curl_opts+=(--cacert "$CURL_CA"); fi
id="smoke-$(date +%s)-$RANDOM"

answer=$("${cli[@]}" send-test --url "$base/webhooks/replicate" --prediction-id "$id") || true
case $answer in
    '200 {"status":"accepted"'*) echo "signed delivery: $answer" ;;
    *) echo "smoke: the signed delivery was not accepted: $answer" >&2; exit 1 ;;
esac

stored=$(curl "${curl_opts[@]}" "$base/predictions/$id")
python3 -c '
import json, sys
p = json.loads(sys.argv[1])
assert (p["status"], p["output"]) == ("succeeded", [[0.0, 0.0, 0.0]]), p
assert len(p["deliveries"]) == 1, p
' "$stored"
listed=$(curl "${curl_opts[@]}" "$base/predictions?status=succeeded&limit=500")
python3 -c '
import json, sys
assert sys.argv[2] in [p["id"] for p in json.loads(sys.argv[1])["items"]]
' "$listed" "$id"
echo "read API: $id succeeded, listed"

other=$("${cli[@]}" secret --generate)
if refused=$(REPLICATE_WEBHOOK_SECRET=$other "${cli[@]}" send-test --url "$base/webhooks/replicate"); then
    echo "smoke: a delivery signed with another secret was accepted: $refused" >&2
    exit 1
fi
case $refused in
    '401 '*) echo "wrong secret: $refused" ;;
    *) echo "smoke: a wrong secret got: $refused" >&2; exit 1 ;;
esac

#!/bin/sh
# Registers the demo RTSP camera with the RefineVAD service (compose profile `demo`), unless a stream with the
# same name is already registered (registrations persist across restarts). The API key is the first one in
# REFINEVAD_API_KEYS, which comes from docker/refinevad.env.
set -eu

key="${REFINEVAD_API_KEYS%%,*}"
if [ -z "$key" ]; then
    echo "REFINEVAD_API_KEYS is empty in docker/refinevad.env" >&2
    exit 1
fi

streams="$(curl -fsS --retry 10 --retry-all-errors --retry-delay 3 \
    -H "X-API-Key: ${key}" "${REFINEVAD_URL}/streams")"
if printf '%s' "$streams" | grep -q "\"name\": *\"${DEMO_STREAM_NAME}\""; then
    echo "stream '${DEMO_STREAM_NAME}' is already registered"
    exit 0
fi

curl -fsS \
    -H "X-API-Key: ${key}" -H "Content-Type: application/json" \
    -d "{\"url\": \"${DEMO_STREAM_URL}\", \"name\": \"${DEMO_STREAM_NAME}\"}" \
    "${REFINEVAD_URL}/streams"
echo
echo "registered '${DEMO_STREAM_NAME}' (${DEMO_STREAM_URL}); live scores: ${REFINEVAD_URL}/streams/<id>/live"

#!/bin/sh
# Runs fedser-client. FEDSER_TOKEN_FILE names a file holding the enrolment token (a Docker or
# Kubernetes secret), so the token never sits in the container's environment definition.
set -eu
if [ -n "${FEDSER_TOKEN_FILE:-}" ] && [ -z "${FEDSER_TOKEN:-}" ]; then
    if ! FEDSER_TOKEN=$(cat "$FEDSER_TOKEN_FILE" 2>/dev/null); then
        echo "fedser-client: error: cannot read FEDSER_TOKEN_FILE $FEDSER_TOKEN_FILE" >&2
        exit 2
    fi
    export FEDSER_TOKEN
fi
exec fedser-client "$@"

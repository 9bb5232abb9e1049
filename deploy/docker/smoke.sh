#!/bin/sh
# Run the built images as compose would: a TLS server and three token-enrolled clients on one
# Docker network, for a few rounds; exits 0 when the server finished every round.
#   deploy/docker/smoke.sh WORKDIR [ROUNDS]
# WORKDIR/secrets/ (tls/, tokens/tokens.json, client-N.token) and WORKDIR/data/client-N/ must exist,
# owned by uid 10001 (docs/deploy.md, compose `setup`). Images: fedser-server:0.1.0, fedser-client:0.1.0.
set -eu
work=$(cd "$1" && pwd)
rounds=${2:-3}
net=fedser-smoke-$$
cleanup() {
    docker rm -f "$net-server" "$net-client-1" "$net-client-2" "$net-client-3" >/dev/null 2>&1 || true
    docker network rm "$net" >/dev/null 2>&1 || true
}
trap cleanup EXIT
docker network create "$net" >/dev/null
docker run -d --name "$net-server" --network "$net" --network-alias server \
    -v "$work/secrets/tls:/etc/fedser/tls:ro" -v "$work/secrets/tokens:/etc/fedser/tokens:ro" -v "$work/state:/var/lib/fedser" \
    fedser-server:0.1.0 serve --address=0.0.0.0:7443 --state-dir=/var/lib/fedser --resume \
    --tls-cert=/etc/fedser/tls/server.pem --tls-key=/etc/fedser/tls/server.key \
    --tokens-file=/etc/fedser/tokens/tokens.json --metrics-port=9100 \
    --rounds="$rounds" --min-clients=3 --fraction=1.0 --eval-every=1 >/dev/null
for n in 1 2 3; do
    docker run -d --name "$net-client-$n" --network "$net" \
        -v "$work/secrets/tls/ca.pem:/etc/fedser/tls/ca.pem:ro" -v "$work/secrets/client-$n.token:/run/secrets/token:ro" \
        -v "$work/data/client-$n:/data" -e FEDSER_TOKEN_FILE=/run/secrets/token \
        fedser-client:0.1.0 join --server=server:7443 --data-dir=/data --name=client-$n --ca-cert=/etc/fedser/tls/ca.pem >/dev/null
done
status=$(docker wait "$net-server")
for n in 1 2 3; do docker wait "$net-client-$n" >/dev/null; done
docker logs "$net-server" 2>&1 | tail -n 3
echo "server exit $status; rounds logged: $(wc -l < "$work/state/metrics.jsonl")"
[ "$status" = 0 ] && [ "$(wc -l < "$work/state/metrics.jsonl")" -eq "$rounds" ]

#!/usr/bin/env bash
# tcpsplice test: splice rules by TLS server name (SNI), by the response's Content-Length,
# and the default action when the first bytes do not come: each connection gets the action
# its rule says, checked from `splicectl flows`, and every body arrives byte-exact (seed 003).
#
# Resilient rules and spliced for ports 80 and 443, splice-proxy registered; in the server
# nginx (HTTP, port 80) and `openssl s_server -WWW` (HTTPS, port 443, a certificate for
# secure.example made here: the TLS session runs end to end between curl and s_server, the
# proxy only reads the ClientHello's server name and never holds a key). Rules:
#   1  sni secure.example              -> splice (after the ClientHello)
#   2  content-length above 1000000    -> splice (after the response head)
#   default proxy, first bytes awaited 2 s
# Checks, one connection each: HTTPS to secure.example: spliced by rule 1; HTTPS to
# other.example: proxied (default); HTTP /big (2 MiB): spliced by rule 2 after its response
# head, over IPv4 and over IPv6; HTTP /small (10 KB): proxied (default). Then the default
# becomes bypass with 300 ms for the first bytes: a client that waits 1 s before its request
# is bypassed by the default at the timeout (the engine takes it when the late bytes or the
# server's SYN-ACK retry come), and its
# answer is still byte-exact. The request rules are read by the engine (the default request
# reader): the connections they splice or bypass never reach the proxy (checked: no proxy in
# their flow); the rules on the response are the proxy's. Last, a set loaded from a file (`splicectl rules load`) with a
# rule per remaining kind of match: a request header (splice), a path pattern (bypass), the
# response's status and Content-Type (splice after the head), and 1000 bytes of a protocol
# that is neither HTTP nor TLS (an upload of xfer.py, spliced once they came); then a rule on
# the port alone, which the engine applies at the SYN without the proxy.
# shellcheck source=Tests/netns/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

topo_create
need_bin splicectl >/dev/null
resilient_rules_install "80,443,$XF_UP_PORT"
resilient_spliced_start "80,443,$XF_UP_PORT"
proxy_start

CROWD_DIR="$TEST_TMP/www"
mkdir -p "$CROWD_DIR"
head -c 2097152 /dev/urandom >"$CROWD_DIR/big"
head -c 10000 /dev/urandom >"$CROWD_DIR/small"
nginx_start "$NS_S" 80
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TEST_TMP/key.pem" -out "$TEST_TMP/cert.pem" \
    -subj /CN=secure.example -days 2 >/dev/null 2>&1 || fail "openssl could not make a certificate"
bg_start s_server "$NS_S" sh -c "cd '$CROWD_DIR' && exec openssl s_server -accept 443 -cert '$TEST_TMP/cert.pem' -key '$TEST_TMP/key.pem' -WWW -quiet"
wait_port "$NS_S" 443

splicectl rules add --sni secure.example --action splice --name secure >/dev/null || fail "rules add --sni failed"
splicectl rules add --content-length-above 1000000 --action splice --name large >/dev/null || fail "rules add --content-length-above failed"
log "rules in force:"$'\n'"$(splicectl rules)"
sni_rule=$(splicectl rules --json | json_get 'rules.0.id')
cl_rule=$(splicectl rules --json | json_get 'rules.1.id')

# get NAME URL [CURL ARGS...]: the body into $TEST_TMP/NAME.body, checked against the file
# the URL's path names under the servers' root; prints the client port.
get() {
    local name=$1 url=$2 file
    shift 2
    file=${url#*://}
    file="$CROWD_DIR/${file#*/}"
    local port
    port=$(nsx "$NS_C" curl -sS --max-time 60 -o "$TEST_TMP/$name.body" -w '%{local_port}' "$@" "$url") \
        || fail "curl $name ($url) failed"
    [[ "$(sha256_of "$TEST_TMP/$name.body")" == "$(sha256_of "$file")" ]] || fail "$name: the body of $url differs"
    echo "$port"
}
# expect PORT DPORT MODE DECISION RULE: the flow of that client port.
expect() {
    local f
    f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$2" --sport "$1") \
        || fail "no flow for client port $1"
    [[ "$(json_get mode <<<"$f")" == "$3" && "$(json_get decision <<<"$f")" == "$4" && "$(json_get rule <<<"$f")" == "$5" ]] \
        || fail "client port $1 to port $2: expected mode $3, decision $4, rule $5; the flow is $f"
    log "  port $1 -> $2: mode $3, decision $4, rule $5$(json_get 'spliceOutcome?' <<<"$f" | sed 's/^./, splice &/;s/^, splice $//')"
}

# by_engine PORT DPORT: the flow of that client port was decided by the engine reading its
# first bytes (the default request reader): the proxy was never engaged.
by_engine() {
    local f
    f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport "$2" --sport "$1") \
        || fail "no flow for client port $1"
    [[ "$(json_get 'proxy?none' <<<"$f")" == none ]] || fail "client port $1: the proxy was engaged, the engine should have decided: $f"
}

r0=$(status_json | json_get splices.decidedAtRequest)
p=$(get tls-secure https://secure.example/big -k --resolve "secure.example:443:$SERVER_IP")
expect "$p" 443 spliced splice "$sni_rule"
by_engine "$p" 443
(($(status_json | json_get splices.decidedAtRequest) == r0 + 1)) || fail "the SNI splice was not counted spliced by the engine from the request"
log "  (the engine read the ClientHello: the proxy was never engaged)"
p=$(get tls-other https://other.example/small -k --resolve "other.example:443:$SERVER_IP")
expect "$p" 443 resilient proxy 0
p=$(get http-big "http://$SERVER_IP/big")
expect "$p" 80 spliced splice "$cl_rule"
p=$(get http-small "http://$SERVER_IP/small")
expect "$p" 80 resilient proxy 0
# The same over IPv6 (the rules and the splice mark in ip6tables).
p=$(get http6-big "http://[$SERVER_IP6]/big")
f=$(flows_json | flowcheck find --src "$CLIENT_IP6" --dst "$SERVER_IP6" --dport 80 --sport "$p") || fail "no IPv6 flow for client port $p"
[[ "$(json_get mode <<<"$f")" == spliced && "$(json_get rule <<<"$f")" == "$cl_rule" && "$(json_get spliceOutcome <<<"$f")" == drained ]] \
    || fail "the IPv6 download of /big was not spliced by rule $cl_rule: $f"
log "  port $p -> 80 over IPv6: mode spliced, decision splice, rule $cl_rule, splice drained"
log "SNI and Content-Length rules: each connection got its rule's action, every body byte-exact"

# The first bytes late: the default (bypass) at the timeout, before any byte.
splicectl rules default --action bypass --first-bytes-timeout-ms 300 >/dev/null || fail "splicectl rules default failed"
late0=$(status_json | json_get splices.requestsLate)
out=$(nsx "$NS_C" python3 - "$SERVER_IP" <<'PY'
import hashlib, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=10)
time.sleep(1.0)
s.sendall(b"GET /small HTTP/1.1\r\nHost: late.example\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(s.getsockname()[1], hashlib.sha256(body).hexdigest())
PY
) || fail "the late client failed"
read -r p sum <<<"$out"
[[ "$sum" == "$(sha256_of "$CROWD_DIR/small")" ]] || fail "the late client's body differs"
expect "$p" 80 spliced bypass 0
by_engine "$p" 80
late=$(($(status_json | json_get splices.requestsLate) - late0))
((late == 1)) || fail "the engine counted $late requests late, expected 1"
log "a client silent past the first-bytes timeout got the default (bypass) from the engine, and its answer byte-exact"

# The other kinds of match, on a new set loaded from a file: a header, a path pattern, the
# response's status and type, the bytes of a protocol that is neither HTTP nor TLS.
cat >"$TEST_TMP/rules2.json" <<'JSON'
{"defaultAction": "proxy", "firstBytesTimeoutMilliseconds": 2000, "rules": [
 {"action": "splice", "name": "flagged", "match": {"header": {"name": "X-Splice", "value": "yes"}}},
 {"action": "bypass", "name": "bins", "match": {"pathPattern": "/files/*.bin"}},
 {"action": "splice", "name": "text-ok", "match": {"method": "GET", "status": [200], "contentType": "text/plain", "pathPrefix": "/text/"}},
 {"action": "splice", "name": "raw-uploads", "match": {"ports": [5002], "proto": "other", "afterBytes": 1000}}]}
JSON
splicectl rules load "$TEST_TMP/rules2.json" >/dev/null || fail "splicectl rules load failed"
log "rules in force:"$'\n'"$(splicectl rules)"
ids=($(splicectl rules --json | python3 -c 'import json,sys; print(" ".join(str(r["id"]) for r in json.load(sys.stdin)["rules"]))'))
mkdir -p "$CROWD_DIR/files"
head -c 500000 /dev/urandom >"$CROWD_DIR/files/a.bin"
mkdir -p "$CROWD_DIR/text"
head -c 600000 /dev/urandom | base64 >"$CROWD_DIR/text/notes.txt"   # nginx says text/plain (its default type)
p=$(get flagged "http://$SERVER_IP/big" -H "X-Splice: yes")
expect "$p" 80 spliced splice "${ids[0]}"
by_engine "$p" 80
p=$(get bins "http://$SERVER_IP/files/a.bin")
expect "$p" 80 spliced bypass "${ids[1]}"
by_engine "$p" 80
p=$(get text-ok "http://$SERVER_IP/text/notes.txt")
expect "$p" 80 spliced splice "${ids[2]}"
p=$(get head-other "http://$SERVER_IP/big" -H "X-Splice: no")
expect "$p" 80 resilient proxy 0
# A raw upload (xfer.py push: no HTTP, no TLS) spliced once 1000 bytes came.
xfers_prepare 0 1 4 raw
xfers_servers_start $((4 << 20))
xfers_start "$SERVER_IP"
xfers_wait 60
xfers_verify
p=$(xfers_client_port rawu1)
expect "$p" "$XF_UP_PORT" spliced splice "${ids[3]}"
log "header, path pattern, response status and type, and after-bytes rules: each connection got its rule's action"

# A rule on the connection alone: the engine applies it at the SYN, the proxy never sees the
# connection, and the flow skips the queue from the client's handshake ACK on.
splicectl rules add --ports 443 --action bypass --position 1 --name tls-direct >/dev/null || fail "rules add --ports 443 failed"
direct_rule=$(splicectl rules --json | json_get 'rules.0.id')
at0=$(status_json | json_get splices.decidedAtConnection)
p=$(get tls-direct https://secure.example/big -k --resolve "secure.example:443:$SERVER_IP")
f=$(flows_json | flowcheck find --src "$CLIENT_IP" --dst "$SERVER_IP" --dport 443 --sport "$p") || fail "no flow for client port $p"
[[ "$(json_get mode <<<"$f")" == spliced && "$(json_get decision <<<"$f")" == bypass && "$(json_get rule <<<"$f")" == "$direct_rule" ]] \
    || fail "the connection-level bypass rule was not applied by the engine: $f"
[[ "$(json_get 'proxy?none' <<<"$f")" == none ]] || fail "the proxy was engaged for a connection-level bypass: $f"
at1=$(status_json | json_get splices.decidedAtConnection)
((at1 == at0 + 1)) || fail "status counts $((at1 - at0)) flows spliced by the engine at the SYN, expected 1"
seen=$(json_get packets <<<"$f")
((seen <= 8)) || fail "the engine saw $seen packets of a connection spliced at its SYN (expected its handshake and its end)"
log "  port $p -> 443: spliced by the engine at the SYN (rule $direct_rule, bypass), no proxy, $seen packets seen"
log "status.splices: $(status_json | json_get splices)"
log "PASS"

#!/usr/bin/env bash
# Proves the trip example runs from OUTSIDE sagaway's source tree, as a team's own repo:
# the example is copied to a fresh directory, sagaway is pip-installed (not editable)
# into a fresh venv there, and the example is migrated, run, exercised over HTTP and
# stopped, on a database and a broker namespace of its own that are removed at the end.
#
# Needs PostgreSQL and RabbitMQ (SAGAWAY_DATABASE_URL's server, SAGAWAY_AMQP_URL; the
# defaults are 127.0.0.1 with postgres/trust and guest/guest), python3 and curl.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EXAMPLE=$(cd "$(dirname "$0")" && pwd)
# The server of SAGAWAY_DATABASE_URL if set (its database part is replaced), else local.
PG_SERVER=${SAGAWAY_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/sagaway}
PG_SERVER=${PG_SERVER%/*}
RANDOM_ID=$(python3 -c 'import secrets; print(secrets.token_hex(4))')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/trips-outside-XXXXXX")

export SAGAWAY_DATABASE_URL="$PG_SERVER/trips_demo_$RANDOM_ID"
export SAGAWAY_NAMESPACE="trips-demo-$RANDOM_ID"
export SAGAWAY_ADMIN_TOKEN="demo-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
export SAGAWAY_LOG_FORMAT=json

step() { printf '\n### %s\n' "$*"; }
run() {
    # To stderr, so that a command's output can still be piped (the run shows both).
    printf '$ %s\n' "$*" >&2
    "$@"
}

UP_PID=""
cleanup() {
    local status=$?
    set +e
    if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
        step "stop sagaway (SIGINT)"
        run kill -INT "$UP_PID"
        wait "$UP_PID"
        echo "sagaway up exited with $?"
        echo "last lines of its log:"
        tail -n 3 "$WORK/up.log" | cut -c1-220
    fi
    if [[ -x "$WORK/venv/bin/python" ]]; then
        step "drop the database and the namespace's queues and exchanges"
        (cd "$WORK/trip_booking" && run "$WORK/venv/bin/python" - <<'PY'
import asyncio
import os

import aio_pika
import aiormq
import asyncpg
from sqlalchemy.engine import make_url

from trips.app import app


async def main() -> None:
    url = make_url(os.environ["SAGAWAY_DATABASE_URL"])
    server = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        left = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", url.database
        )
    finally:
        await conn.close()
    print(f"dropped database {url.database} (databases of that name left: {left})")

    topology = app.topology(
        namespace=os.environ["SAGAWAY_NAMESPACE"], queue_type="quorum", delivery_limit=5
    )
    queues = [q.name for q in topology.queues]
    queues += [topology.dead_letter_queue(q) for q in queues]
    amqp = os.environ.get("SAGAWAY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    connection = await aio_pika.connect(amqp)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in (*topology.exchanges, topology.dead_letter_exchange):
            await channel.exchange_delete(name)
        print(f"deleted {len(queues)} queues and {len(topology.exchanges) + 1} exchanges")
        remaining = []
        for name in queues:
            probe = await connection.channel()
            try:
                await probe.declare_queue(name, passive=True)
                remaining.append(name)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
        print(f"queues of {os.environ['SAGAWAY_NAMESPACE']} left: {remaining}")
    finally:
        await connection.close()


asyncio.run(main())
PY
        )
    fi
    rm -rf "$WORK"
    step "done (exit $status)"
    exit "$status"
}
trap cleanup EXIT

step "copy the example out of the source tree"
run cp -r "$EXAMPLE" "$WORK/trip_booking"
find "$WORK/trip_booking" -name __pycache__ -prune -exec rm -rf {} +
run ls "$WORK/trip_booking"

step "a fresh venv, and sagaway installed from $REPO_ROOT (not editable)"
run python3 -m venv "$WORK/venv"
# This machine's pip configuration names local package mirrors that may be absent; pip
# says so once per package, which says nothing about sagaway.
run "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check "$REPO_ROOT" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
cd "$WORK/trip_booking"
PATH="$WORK/venv/bin:$PATH"
run sagaway --help >/dev/null
run python -c 'import sagaway, services, trips; print("sagaway from", sagaway.__file__); print("services from", services.__file__)'

step "migrate: sagaway's schema, then the example's own revisions"
run sagaway migrate --app trips.app:app 2>&1 | grep -o '"event": "[^"]*"'

API_PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API="http://127.0.0.1:$API_PORT"

step "sagaway up --app trips.app:app on port $API_PORT (in the background)"
printf '$ sagaway up --app trips.app:app --api-port %s --metrics-port-base 0 > up.log &\n' "$API_PORT"
sagaway up --app trips.app:app --api-port "$API_PORT" --metrics-port-base 0 >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1 120); do
    curl -sf "$API/readyz" >/dev/null && break
    kill -0 "$UP_PID" || { cat "$WORK/up.log"; exit 1; }
    sleep 0.5
done
run curl -sf "$API/readyz"
echo

json() { python -c "import json, sys; print(json.load(sys.stdin)$1)"; }

book() {
    local body=$1
    run curl -sf -X POST "$API/trips" -H 'Content-Type: application/json' -d "$body" | tee "$WORK/accepted.json"
    echo
}

# A trip that completes, and one the hotel rejects (destination FULL: no_rooms).
step "POST /trips: a trip that completes"
book '{"traveler": "Ada", "destination": "Lisbon", "depart_on": "2027-03-01", "nights": 3, "card": "4242", "amount_cents": 45000}'
OK_SAGA=$(json "['saga_id']" <"$WORK/accepted.json")
OK_BOOKING=$(json "['booking_id']" <"$WORK/accepted.json")

step "POST /trips: a trip to a FULL hotel, which compensates"
book '{"traveler": "Grace", "destination": "FULL", "depart_on": "2027-03-01", "nights": 2, "card": "4242", "amount_cents": 30000}'
BAD_SAGA=$(json "['saga_id']" <"$WORK/accepted.json")
BAD_BOOKING=$(json "['booking_id']" <"$WORK/accepted.json")

step "wait for their ends: GET /sagas/{id}?wait_s=20"
run curl -sf "$API/sagas/$OK_SAGA?wait_s=20" | tee "$WORK/ok.json"
echo
run curl -sf "$API/sagas/$BAD_SAGA?wait_s=20" | tee "$WORK/bad.json"
echo
OK_STATUS=$(json "['status']" <"$WORK/ok.json")
BAD_STATUS=$(json "['status']" <"$WORK/bad.json")
echo "completing trip: $OK_STATUS; FULL hotel trip: $BAD_STATUS"
[[ "$OK_STATUS" == COMPLETED && "$BAD_STATUS" == COMPENSATED ]]

step "the bookings, as the example's own GET /trips/{id} shows them"
run curl -sf "$API/trips/$OK_BOOKING" | tee "$WORK/ok-trip.json"
echo
run curl -sf "$API/trips/$BAD_BOOKING" | tee "$WORK/bad-trip.json"
echo
[[ $(json "['status']" <"$WORK/ok-trip.json") == CONFIRMED ]]
[[ $(json "['flight_ref']" <"$WORK/ok-trip.json") == FL-* ]]
[[ $(python -c "import json, sys; d = json.load(sys.stdin); print(d['status'], d['rejection_reason'])" <"$WORK/bad-trip.json") == "REJECTED no_rooms" ]]

step "the compensating saga's history"
run curl -sf "$API/sagas/$BAD_SAGA/history" | python -c 'import json, sys; [print(" ", e["kind"], "|", e["detail"]) for e in json.load(sys.stdin)]'

step "GET /asyncapi.json: the trip commands are in it"
run curl -sf "$API/asyncapi.json" | python -c '
import json, sys
doc = json.load(sys.stdin)
messages = sorted(doc["components"]["messages"])
print("messages:", ", ".join(messages))
missing = {"ReserveFlight", "CancelFlight", "ReserveHotel", "CancelHotel", "ChargeCard"} - set(messages)
assert not missing, missing'

step "GET /admin/overview (admin token): the dashboard knows saga type trip_booking"
run curl -sf "$API/admin/overview" -H "Authorization: Bearer $SAGAWAY_ADMIN_TOKEN" | python -c '
import json, sys
overview = json.load(sys.stdin)
print("saga_types:", overview["saga_types"])
print("counts:", overview["counts"])
assert "trip_booking" in overview["saga_types"], overview["saga_types"]'

step "all checks passed"

#!/usr/bin/env bash
# Makes sure the local PostgreSQL and RabbitMQ answer: starts them if they are
# installed but stopped, then waits until they accept connections.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  local name=$1 host=$2 port=$3 seconds=$4
  for _ in $(seq 1 "$((seconds * 5))"); do
    port_open "$host" "$port" && { echo "$name is up on $host:$port"; return 0; }
    sleep 0.2
  done
  echo "error: $name did not come up on $host:$port within ${seconds}s" >&2
  return 1
}

if ! port_open "$PG_HOST" "$PG_PORT"; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  else
    echo "error: PostgreSQL is not reachable on $PG_HOST:$PG_PORT and is not installed here;" \
         "install it or set SAGAWAY_DATABASE_URL" >&2
    exit 1
  fi
fi
wait_port PostgreSQL "$PG_HOST" "$PG_PORT" 60

if ! port_open "$AMQP_HOST" "$AMQP_PORT"; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached || true
  else
    echo "error: RabbitMQ is not reachable on $AMQP_HOST:$AMQP_PORT and is not installed here;" \
         "install it or set SAGAWAY_AMQP_URL" >&2
    exit 1
  fi
fi
wait_port RabbitMQ "$AMQP_HOST" "$AMQP_PORT" 120

#!/usr/bin/env bash
# Makes sure the local PostgreSQL and RabbitMQ answer: starts them if they are
# installed but stopped, installs them from the distribution's packages first on a
# Debian-family machine where they are missing, then waits until they accept
# connections. Elsewhere it stops and prints the one command that would start them.
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

COMPOSE_HINT="docker compose up -d postgres rabbitmq"

# apt-get as root, or through sudo when it needs no password; empty when neither.
apt_runner() {
  command -v apt-get >/dev/null 2>&1 || return 0
  if [ "$(id -u)" -eq 0 ]; then echo "env"; return 0; fi
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then echo "sudo -n env"; fi
}

APT_UPDATED=
apt_install() {
  local runner
  runner=$(apt_runner)
  if [ -z "$runner" ]; then return 1; fi
  echo "installing $* from the distribution's packages (apt-get)"
  # policy-rc.d 101: the packages must not try to start services through an init
  # system that may not run here; this script starts them itself below.
  local policy=/usr/sbin/policy-rc.d created_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $runner tee "$policy" >/dev/null
    $runner chmod +x "$policy"
    created_policy=1
  fi
  local status=0
  if [ -z "$APT_UPDATED" ]; then $runner DEBIAN_FRONTEND=noninteractive apt-get update -q || status=$?; APT_UPDATED=1; fi
  if [ "$status" -eq 0 ]; then
    $runner DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" || status=$?
  fi
  if [ -n "$created_policy" ]; then $runner rm -f "$policy"; fi
  return "$status"
}

# A PostgreSQL cluster this script just installed accepts the default URL
# (user postgres, no password) from this machine only, as the README's defaults need.
trust_local_connections() {
  local runner version hba
  runner=$(apt_runner)
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  [ -f "$hba" ] || return 0
  echo "PostgreSQL $version: trusting connections from 127.0.0.1 and ::1 (new local install)"
  $runner sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
}

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
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    if apt_install postgresql; then
      trust_local_connections
    else
      echo "error: PostgreSQL is not reachable on $PG_HOST:$PG_PORT and cannot be installed" \
           "here (no apt-get as root). Start it with: $COMPOSE_HINT" \
           "(or point SAGAWAY_DATABASE_URL at yours)" >&2
      exit 1
    fi
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
wait_port PostgreSQL "$PG_HOST" "$PG_PORT" 60

if ! port_open "$AMQP_HOST" "$AMQP_PORT"; then
  if ! command -v rabbitmq-server >/dev/null 2>&1 && ! apt_install rabbitmq-server; then
    echo "error: RabbitMQ is not reachable on $AMQP_HOST:$AMQP_PORT and cannot be installed" \
         "here (no apt-get as root). Start it with: $COMPOSE_HINT" \
         "(or point SAGAWAY_AMQP_URL at yours)" >&2
    exit 1
  fi
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_port RabbitMQ "$AMQP_HOST" "$AMQP_PORT" 120

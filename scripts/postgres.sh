#!/usr/bin/env sh
# The receiver's tests run on PostgreSQL at 127.0.0.1:5432 (database `test`, trust auth).
# Start this machine's cluster if it is down; anywhere else, say what is needed in one line.
set -eu
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    exit 0
fi
echo "postgres: the tests need PostgreSQL on 127.0.0.1:5432 (database test, trust auth); none is running" >&2
exit 1

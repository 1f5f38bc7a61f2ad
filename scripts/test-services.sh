#!/usr/bin/env sh
# What `make test` needs beyond the venv, set up if this machine can, else named in one line:
# - PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth): the receiver's tests use it;
# - Caddy, Debian's package (bookworm's 2.6.2): the receiver is tested behind it over HTTPS;
# - Chromium and its ChromeDriver, Debian's packages: the console is tested in a real browser
#   (Debian's security archive keeps only its latest build, so that one is taken).
set -eu
CADDY_VERSION=2.6.2-5

fail() {
    echo "test-services: $*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start \
            || fail "could not start PostgreSQL; the tests need it on 127.0.0.1:5432"
    else
        fail "the tests need PostgreSQL on 127.0.0.1:5432 (database test, trust auth); none is running"
    fi
fi

if ! command -v caddy >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 \
        || fail "the tests need caddy (https://caddyserver.com/docs/install); it is not on PATH"
    { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends \
        "caddy=$CADDY_VERSION"; } >/dev/null \
        || fail "could not install caddy=$CADDY_VERSION with apt-get (root or sudo needed)"
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    command -v apt-get >/dev/null 2>&1 \
        || fail "the tests need Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)"
    { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver; } >/dev/null \
        || fail "could not install chromium and chromium-driver with apt-get (root or sudo needed)"
fi

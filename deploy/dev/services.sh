#!/usr/bin/env bash
# Make sure the services the integration tests use are running on this machine:
# RabbitMQ on 127.0.0.1:5672 (guest/guest), MariaDB on 127.0.0.1:3306
# (root, no password, database `test`) and HBase with its Thrift server on
# 127.0.0.1:9090 (deploy/dev/hbase.sh: Apache HBase from Maven Central, in
# .cache/hbase). Also installs Debian's Chromium (/usr/bin/chromium), the
# headless browser the web console's tests drive through Playwright (never a
# browser build downloaded by a test tool). Starts what is stopped and installs
# from Debian's packages what is missing. Development and CI only.
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 120); do
        listening "$port" && return 0
        sleep 1
    done
    echo "services: $name did not open port $port within 120 s" >&2
    return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
install_pkg() {
    if [ "$apt_updated" = 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rabbitmq() {
    listening 5672 && return 0
    command -v rabbitmq-server >/dev/null || install_pkg rabbitmq-server
    listening 5672 && return 0  # the package may have started it
    echo "services: starting RabbitMQ"
    as_root rabbitmq-server -detached
    wait_port 5672 RabbitMQ
}

ensure_mariadb() {
    if ! listening 3306; then
        command -v mariadbd >/dev/null || install_pkg mariadb-server
        if ! listening 3306; then
            echo "services: starting MariaDB"
            as_root mkdir -p /run/mysqld
            as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
            # mariadbd refuses to run as root unless told which user to be.
            as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
            wait_port 3306 MariaDB
        fi
    fi
    # A fresh Debian install lets root in only over the socket: open TCP
    # access for root without a password and create `test`, as on CI.
    if ! mariadb -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1; then
        as_root mariadb -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
FLUSH PRIVILEGES;
SQL
    fi
    mariadb -uroot -h127.0.0.1 -e 'CREATE DATABASE IF NOT EXISTS test'
}

ensure_hbase() {
    # Left as it is when its Thrift server answers; needs Java and Maven (installed on CI).
    command -v javac >/dev/null || install_pkg openjdk-17-jdk-headless
    command -v mvn >/dev/null || install_pkg maven
    bash "$(dirname "${BASH_SOURCE[0]}")/hbase.sh" start
}

ensure_chromium() {
    # Not a service: the browser tests (pytest -m browser) launch it themselves.
    [ -x /usr/bin/chromium ] || install_pkg chromium
}

ensure_nettools() {
    # Not services: the test hosts in network namespaces (tests/support/nethosts.py) need ip, tc and nft.
    command -v tc >/dev/null || install_pkg iproute2
    command -v nft >/dev/null || install_pkg nftables
}

ensure_rabbitmq
ensure_mariadb
ensure_hbase
ensure_chromium
ensure_nettools
echo "services: RabbitMQ, MariaDB and HBase are up; Chromium, iproute2 and nftables are installed"

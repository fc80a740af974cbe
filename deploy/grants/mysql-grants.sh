#!/bin/sh
# Prints the SQL that creates Swarm's ledger database (if missing) and its
# two users on MySQL/MariaDB, and grants each user only what it needs. Pipe
# it into the server as a user that may create users and grant (root); don't
# save it, it holds the passwords:
#
#   read -rs LEDGER_PASSWORD; read -rs LEDGER_ADMIN_PASSWORD
#   export LEDGER_PASSWORD LEDGER_ADMIN_PASSWORD
#   deploy/grants/mysql-grants.sh DATABASE RUNTIME_USER ADMIN_USER [HOST] | sudo mysql
#
# HOST is the host part of both accounts ('%', the default: any host; better
# the Swarm hosts' network, e.g. '10.1.2.%'). The passwords come from the
# environment, not the command line, so that `ps` never shows them; they are
# not named SWARM_*, which swarm reads as config keys. Running it again is
# harmless: an existing user keeps its password, and grants are only ever
# added, never taken away (check with SHOW GRANTS FOR 'user'@'host').
set -eu

usage() {
    echo "usage: LEDGER_PASSWORD=... LEDGER_ADMIN_PASSWORD=... $0 DATABASE RUNTIME_USER ADMIN_USER [HOST]" >&2
    exit 2
}

# Names go into the SQL as they are: only plain ones are let in.
check_name() {
    case $2 in
        '' | *[!A-Za-z0-9_]*) echo "$0: $1 must be letters, digits and _ only, got '$2'" >&2; exit 2 ;;
    esac
}

check_host() {
    case $1 in
        '' | *[!A-Za-z0-9._%:-]*) echo "$0: HOST must be a host name, address or pattern, got '$1'" >&2; exit 2 ;;
    esac
}

# A string literal: the SQL below turns off backslash escapes, so doubling ' is all it takes.
literal() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"
}

[ $# -ge 3 ] && [ $# -le 4 ] || usage
database=$1 runtime=$2 admin=$3 host=${4:-%}
check_name DATABASE "$database"
check_name RUNTIME_USER "$runtime"
check_name ADMIN_USER "$admin"
check_host "$host"
[ "$runtime" != "$admin" ] || { echo "$0: RUNTIME_USER and ADMIN_USER must differ" >&2; exit 2; }
[ -n "${LEDGER_PASSWORD:-}" ] || { echo "$0: set LEDGER_PASSWORD (the runtime user's)" >&2; exit 2; }
[ -n "${LEDGER_ADMIN_PASSWORD:-}" ] || { echo "$0: set LEDGER_ADMIN_PASSWORD" >&2; exit 2; }

# In a database-level grant _ and % are wildcards: `swarm_prod`.* would also
# cover swarmXprod. Escaped, the grant names exactly this database.
grant_db=$(printf '%s' "$database" | sed 's/_/\\_/g')
runtime_account="'$runtime'@'$host'"
admin_account="'$admin'@'$host'"

cat <<SQL
-- Swarm's ledger: the database \`$database\` and its two users.
SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES';
CREATE DATABASE IF NOT EXISTS \`$database\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS $runtime_account IDENTIFIED BY $(literal "$LEDGER_PASSWORD");
CREATE USER IF NOT EXISTS $admin_account IDENTIFIED BY $(literal "$LEDGER_ADMIN_PASSWORD");

-- Database-level grants, for a database that is Swarm's alone: they cover the
-- tables a later \`swarm db migrate\` adds, and can be given before the tables
-- exist. If the database is shared, grant on the tables instead, after
-- \`swarm db init\` (MySQL has no wildcard for table names) and again after a
-- migration that adds a table: the runtime user the same four privileges
-- ON \`$database\`.swarm_runs, swarm_phases, swarm_messages, swarm_counters,
-- swarm_dead_letters, swarm_locks, swarm_checks, swarm_published,
-- swarm_decisions and swarm_controls (one GRANT each); the admin user its seven ON each of
-- those and swarm_schema.

-- The runtime user: the master, the workers and swarm
-- runs|status|dlq|rerun|publish|reject|generations|ctl.
-- Rows only, no DDL. DELETE: the master's lock row goes on release, and
-- REPLACE INTO swarm_locks is a DELETE and an INSERT. UPDATE also covers
-- SELECT ... FOR UPDATE and INSERT ... ON DUPLICATE KEY UPDATE. The master's
-- lock itself (GET_LOCK, IS_USED_LOCK, RELEASE_LOCK) and the SET SESSION
-- statements each connection runs need no privilege.
GRANT SELECT, INSERT, UPDATE, DELETE ON \`$grant_db\`.* TO $runtime_account;

-- The admin user: swarm db init|migrate, and swarm db prune (deletes old
-- runs' rows). CREATE for the tables, INDEX for the indexes, ALTER for later
-- migration steps; SELECT, INSERT and UPDATE for the version in swarm_schema.
-- Its look at information_schema.statistics needs no grant: the rows of the
-- tables it holds privileges on are visible to it. No DROP: no step drops a
-- table yet; a release whose migration does will say so.
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX ON \`$grant_db\`.* TO $admin_account;
SQL

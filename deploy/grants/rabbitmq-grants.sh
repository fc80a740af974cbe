#!/bin/sh
# Creates Swarm's RabbitMQ vhost and user, and limits the user to Swarm's
# queues in that vhost. Run it where rabbitmqctl may manage the broker (root):
#
#   read -rs BROKER_PASSWORD; export BROKER_PASSWORD
#   deploy/grants/rabbitmq-grants.sh VHOST USER
#
# RABBITMQCTL overrides the command (e.g. "rabbitmqctl -n rabbit@mq1"). The
# password comes from the environment and reaches rabbitmqctl on its standard
# input, so `ps` never shows it; it is needed only when the user is new (an
# existing user keeps its password). Running it again is harmless, and resets
# the user's permissions in VHOST to exactly these. It leaves other vhosts
# alone: the output lists every vhost the user has permissions in.
set -eu

ctl=${RABBITMQCTL:-rabbitmqctl}

# Every queue Swarm uses is named swarm.<job>.<stage>[.dlq|.retry.<ms>].
#   configure: declaring them. The regex also admits exchanges named swarm.*,
#              which Swarm never declares (RabbitMQ has one regex for both).
#   write:     publishing, always through the default exchange, which RabbitMQ
#              checks as amq.default. Declaring a queue with
#              x-dead-letter-exchange "" also needs write on amq.default. No
#              write on the queues: that is for binding them to exchanges, and
#              the broker's own dead-lettering and TTL expiry need no permission.
#   read:      consuming, basic.get (swarm dlq) and purging; declaring a queue
#              with a dead-letter exchange also needs read on that queue.
# A passive declare (how swarm status reads queue depths) needs no permission,
# only access to the vhost; but the autoscaler and swarm dlq --job declare the
# queues too, so one user with these permissions serves every Swarm command.
CONFIGURE='^swarm\.'
WRITE='^amq\.default$'
READ='^swarm\.'

[ $# -eq 2 ] || { echo "usage: BROKER_PASSWORD=... $0 VHOST USER" >&2; exit 2; }
vhost=$1 user=$2

user_exists() {
    $ctl -q list_users --no-table-headers | cut -f1 | grep -qxF -- "$user"
}

$ctl add_vhost "$vhost"  # does nothing if it exists
if ! user_exists; then
    [ -n "${BROKER_PASSWORD:-}" ] || { echo "$0: set BROKER_PASSWORD for the new user $user" >&2; exit 2; }
    printf '%s\n' "$BROKER_PASSWORD" | $ctl add_user "$user"  # no password argument: read from stdin
fi
$ctl set_permissions -p "$vhost" "$user" "$CONFIGURE" "$WRITE" "$READ"
$ctl -q list_user_permissions "$user"

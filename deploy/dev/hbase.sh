#!/usr/bin/env bash
# A real Apache HBase for development and tests: standalone HBase (HMaster with its embedded
# ZooKeeper and region server, in one JVM) storing on the local filesystem, and HBase's Thrift
# (v1) server as a separate process, as users run `hbase thrift start`. Development and CI only.
#
#   deploy/dev/hbase.sh start [THRIFT OPTIONS]   resolve if needed, start HBase and the Thrift server,
#                                                wait until Thrift answers (each part left as it is if up)
#   deploy/dev/hbase.sh stop [--kill]            stop every Thrift server of the data dir, then HBase
#                                                (cleanly; --kill: SIGKILL, for a throwaway data dir)
#   deploy/dev/hbase.sh status                   what runs; exit 0 if the Thrift server answers
#   deploy/dev/hbase.sh master-start | master-stop [--kill]
#                                                HBase alone (the Thrift servers stay up)
#   deploy/dev/hbase.sh thrift-start [--port P] [THRIFT OPTIONS]
#                                                one more Thrift server, on P (default $HBASE_THRIFT_PORT)
#   deploy/dev/hbase.sh thrift-stop [--port P] [--kill]
#   deploy/dev/hbase.sh admin COMMAND ...        DevAdmin: create-presplit, split, regions, wait-regions,
#                                                flush, drop, drop-prefix, ping, shutdown (admin --help)
#   deploy/dev/hbase.sh resolve                  fetch HBase from Maven Central, build DevAdmin
#   deploy/dev/hbase.sh url                      the Swarm tables URL of the Thrift server
#
# THRIFT OPTIONS are passed to org.apache.hadoop.hbase.thrift.ThriftServer: -hsha, -nonblocking or
# -f (framed transport: use ?transport=framed in the URL), -c (compact: ?protocol=compact), ...
#
# Environment (defaults in brackets):
#   HBASE_DEV_CACHE      jars, Maven's local repository, DevAdmin [.cache/hbase of this checkout]
#   HBASE_DEV_DATA       tables, ZooKeeper, config, logs, pid files [$HBASE_DEV_CACHE/data]
#   HBASE_THRIFT_PORT    [9090]    HBASE_ZK_PORT  ZooKeeper's client port [2181]
#   HBASE_HEAP           HBase's -Xmx [1g]    HBASE_THRIFT_HEAP  the Thrift server's [512m]
#   HBASE_SCANNER_TIMEOUT_MS  hbase.client.scanner.timeout.period, the scanner lease [5000]
#   HBASE_START_TIMEOUT  seconds to wait for the Thrift server to answer [240]
#   HBASE_DEV_RETRY_PAUSE  seconds before Maven is tried again, times the try, after a failed fetch [15]
# A second data dir with other ports is a private HBase of its own.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODULE=$HERE/hbase
CACHE=${HBASE_DEV_CACHE:-$ROOT/.cache/hbase}
DATA=${HBASE_DEV_DATA:-$CACHE/data}
THRIFT_PORT=${HBASE_THRIFT_PORT:-9090}
ZK_PORT=${HBASE_ZK_PORT:-2181}
HEAP=${HBASE_HEAP:-1g}
THRIFT_HEAP=${HBASE_THRIFT_HEAP:-512m}
SCANNER_TIMEOUT_MS=${HBASE_SCANNER_TIMEOUT_MS:-5000}
START_TIMEOUT=${HBASE_START_TIMEOUT:-240}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
PYTHON=${PYTHON:-python3}

LIB=$CACHE/lib
CONF=$DATA/conf
RUN=$DATA/run
LOGS=$DATA/logs

say() { echo "hbase: $*" >&2; }
die() { say "$*"; exit 1; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What HBase's own launcher adds on Java 11+ (bin/hbase, hbase-config.sh).
JVM_FLAGS=(
    -XX:+UseG1GC -Djava.net.preferIPv4Stack=true
    -Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true
    --add-modules jdk.unsupported
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.util.concurrent=ALL-UNNAMED
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.security.jgss/sun.security.krb5=ALL-UNNAMED
    --add-exports java.base/sun.net.dns=ALL-UNNAMED --add-exports java.base/sun.net.util=ALL-UNNAMED
    -Djava.util.logging.config.class=org.apache.hadoop.hbase.logging.JulToSlf4jInitializer
)

# resolve ---------------------------------------------------------------------------------

fingerprint() {
    cat "$MODULE/pom.xml" $(find "$MODULE/src" -type f | sort) | sha256sum | cut -c1-12
}

# The jars go to lib-<fingerprint>, and `lib` links to the current one. A JVM reads its jars
# again by path while it runs, so the folder of a running HBase is never changed or removed.
resolve() {
    local want
    want=$(fingerprint)
    if [ -f "$CACHE/lib-$want/.complete" ] && [ "$(readlink "$LIB" 2>/dev/null)" = "lib-$want" ]; then
        return 0
    fi
    mkdir -p "$CACHE"
    if [ ! -f "$CACHE/lib-$want/.complete" ]; then
        command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch HBase"
        say "fetching HBase with Maven into $CACHE (once)"
        local started=$SECONDS
        rm -rf "$CACHE/lib-$want"
        # A repository that answers 503 or drops a download for a while is common: try again, up to 4 times
        # (-U: Maven otherwise remembers a failed download and does not ask again).
        local try
        for try in 1 2 3 4; do
            if mvn -B -q $([ "$try" -gt 1 ] && echo -U) -Dmaven.repo.local="$CACHE/m2" -Dhbase.dev.cache="$CACHE" \
                -Dhbase.dev.lib="$CACHE/lib-$want" -f "$MODULE/pom.xml" package >"$CACHE/maven.log" 2>&1; then
                break
            fi
            if [ "$try" -eq 4 ]; then
                tail -n 40 "$CACHE/maven.log" >&2
                die "Maven could not fetch HBase or build DevAdmin after 4 tries; see $CACHE/maven.log"
            fi
            say "Maven failed (try $try of 4: $(grep -m1 -o 'status: [0-9]*[^-]*' "$CACHE/maven.log" || echo "see maven.log")); trying again in $((try * ${HBASE_DEV_RETRY_PAUSE:-15})) s"
            rm -rf "$CACHE/lib-$want"
            sleep $((try * ${HBASE_DEV_RETRY_PAUSE:-15}))
        done
        touch "$CACHE/lib-$want/.complete"
        say "fetched $(ls "$CACHE/lib-$want" | wc -l) jars in $((SECONDS - started)) s"
    fi
    if [ -d "$LIB" ] && [ ! -L "$LIB" ]; then  # a plain folder, from an older version of this script
        grep -qsF "$LIB/" /proc/[0-9]*/cmdline && die "an HBase runs from $LIB: stop it first"
        rm -rf "$LIB"
    fi
    ln -sfn "lib-$want" "$LIB.tmp" && mv -T "$LIB.tmp" "$LIB"
    local old
    for old in "$CACHE"/lib-*; do  # earlier builds that no running process uses
        [ "$old" = "$CACHE/lib-$want" ] && continue
        grep -qsF "$old/" /proc/[0-9]*/cmdline || rm -rf "$old"
    done
}

classpath() { echo "$CONF:$(readlink -f "$LIB")/*"; }

# config ----------------------------------------------------------------------------------

write_conf() {
    mkdir -p "$CONF" "$RUN" "$LOGS" "$DATA/tmp"
    local props=(
        hbase.cluster.distributed false
        hbase.rootdir "file://$DATA/hbase"
        hbase.tmp.dir "$DATA/tmp"
        hbase.zookeeper.quorum 127.0.0.1
        hbase.zookeeper.property.clientPort "$ZK_PORT"
        hbase.zookeeper.property.dataDir "$DATA/zookeeper"
        # The local filesystem cannot hflush/hsync: accept that, as standalone HBase does.
        hbase.unsafe.stream.capability.enforce false
        # Master and region server on ports of their own choosing; no web UIs.
        hbase.localcluster.assign.random.ports true
        hbase.master.ipc.address 127.0.0.1
        hbase.regionserver.ipc.address 127.0.0.1
        hbase.master.info.port -1
        hbase.regionserver.info.port -1
        hbase.thrift.info.port -1
        # Short scanner leases, so tests can see one expire.
        hbase.client.scanner.timeout.period "$SCANNER_TIMEOUT_MS"
        # Small: this is a laptop's or CI's HBase.
        hbase.regionserver.handler.count 10
        hbase.hstore.flusher.count 1
        hbase.thrift.minWorkers 4
        hbase.master.procedure.threads 4
    )
    {
        echo '<?xml version="1.0"?>'
        echo '<!-- Written by deploy/dev/hbase.sh at each start; changes here are lost. -->'
        echo '<configuration>'
        local i
        for ((i = 0; i < ${#props[@]}; i += 2)); do
            printf '  <property><name>%s</name><value>%s</value></property>\n' "${props[i]}" "${props[i+1]}"
        done
        echo '</configuration>'
    } >"$CONF/hbase-site.xml"
    cat >"$CONF/log4j2.properties" <<'EOF'
status = warn
dest = err
name = SwarmDevHBase
appender.console.type = Console
appender.console.target = SYSTEM_ERR
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{ISO8601} %-5p [%t] %c{2}: %.1000m%n
rootLogger = INFO,console
logger.zookeeper.name = org.apache.zookeeper
logger.zookeeper.level = WARN
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = WARN
logger.hbase.name = org.apache.hadoop.hbase
logger.hbase.level = INFO
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = ERROR
logger.registry.name = org.apache.hadoop.hbase.client.ZKConnectionRegistry
logger.registry.level = ERROR
logger.metrics.name = org.apache.hadoop.metrics2
logger.metrics.level = ERROR
EOF
    sed -e 's/^rootLogger = INFO/rootLogger = WARN/' -e 's/^logger.hbase.level = INFO/logger.hbase.level = WARN/' \
        "$CONF/log4j2.properties" >"$CONF/log4j2-quiet.properties"
}

# processes -------------------------------------------------------------------------------

pid_of() { [ -f "$RUN/$1.pid" ] && cat "$RUN/$1.pid" || true; }

alive() {  # alive NAME: its pid file names a live process that is this NAME's JVM
    local pid
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-Dproc_swarm_hbase_$1 "
}

# start_daemon NAME HEAP CLASS ARGS...: a JVM in a session (process group) of its own.
start_daemon() {
    local name=$1 heap=$2 log="$LOGS/$1.log"
    shift 2
    [ -f "$log" ] && mv -f "$log" "$log.1"
    setsid "$JAVA" -Dproc_swarm_hbase_"$name" -Xmx"$heap" "${JVM_FLAGS[@]}" -Dhbase.log.dir="$LOGS" \
        -cp "$(classpath)" "$@" >"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/$name.pid"
}

# stop_daemon NAME SIGNAL SECONDS: signal its process group, wait for it to go; SIGKILL after.
stop_daemon() {
    local name=$1 signal=$2 grace=$3 pid
    pid=$(pid_of "$name")
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    kill -"$signal" -- -"$pid" 2>/dev/null || kill -"$signal" "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name did not stop within $grace s: killing it"
        kill -KILL -- -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$RUN/$name.pid"
}

log_tail() { [ -f "$1" ] && tail -n "${2:-30}" "$1" | sed 's/^/    /' >&2 || true; }

# HBase -----------------------------------------------------------------------------------

master_start() {
    if alive master; then
        return 0
    fi
    if listening "$ZK_PORT"; then
        say "ZooKeeper already answers on port $ZK_PORT: an HBase not started from $DATA runs; using it"
        return 0
    fi
    resolve
    write_conf
    say "starting HBase (data in $DATA, ZooKeeper on $ZK_PORT)"
    start_daemon master "$HEAP" org.apache.hadoop.hbase.master.HMaster start
}

master_stop() {
    local kill=${1:-}
    alive master || { rm -f "$RUN/master.pid"; return 0; }
    if [ "$kill" = "--kill" ]; then
        stop_daemon master KILL 30
        return 0
    fi
    say "stopping HBase"
    # A clean shutdown flushes and closes every region; SIGTERM only if that does not end it.
    run_admin shutdown >/dev/null 2>&1 || true
    local pid i
    pid=$(pid_of master)
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    stop_daemon master TERM 30
}

# Thrift ----------------------------------------------------------------------------------

# thrift_ping_flags OPTIONS...: how a client must talk to a Thrift server started with OPTIONS.
thrift_ping_flags() {
    local flags=() opt
    for opt in "$@"; do
        case $opt in
            -hsha | -nonblocking | -threadedselector | -f | --framed) flags+=(--framed) ;;
            -c | --compact) flags+=(--compact) ;;
        esac
    done
    echo "${flags[@]}" | tr ' ' '\n' | sort -u | tr '\n' ' '
}

# real_hbase PORT [PING FLAGS]: fail unless what answers on PORT is HBase's Thrift server.
real_hbase() {
    local port=$1
    shift
    if [ "$("$PYTHON" "$MODULE/thrift_ping.py" --port "$port" "$@" --kind)" != hbase ]; then
        die "port $port is served by Swarm's development server (swarm hbase-dev), not HBase: stop it, or set HBASE_THRIFT_PORT"
    fi
}

thrift_answers() {  # thrift_answers PORT [PING FLAGS] [--wait S --log F]
    local port=$1
    shift
    "$PYTHON" "$MODULE/thrift_ping.py" --port "$port" "$@"
}

thrift_start() {
    local port=$THRIFT_PORT opts=()
    while [ $# -gt 0 ]; do
        case $1 in
            --port) port=$2; shift 2 ;;
            *) opts+=("$1"); shift ;;
        esac
    done
    local name="thrift-$port" ping
    ping=$(thrift_ping_flags "${opts[@]+"${opts[@]}"}")
    # shellcheck disable=SC2086 # the flags are words
    if alive "$name" || thrift_answers "$port" $ping --timeout 5; then
        wait_thrift "$port" "$name" $ping
        real_hbase "$port" $ping
        return 0
    fi
    listening "$port" && die "port $port is taken by something that is not an HBase Thrift server"
    resolve
    [ -f "$CONF/hbase-site.xml" ] || write_conf
    say "starting the Thrift server on 127.0.0.1:$port ${opts[*]+${opts[*]}}"
    start_daemon "$name" "$THRIFT_HEAP" org.apache.hadoop.hbase.thrift.ThriftServer \
        -b 127.0.0.1 -p "$port" "${opts[@]+"${opts[@]}"}" start
    # shellcheck disable=SC2086
    wait_thrift "$port" "$name" $ping
}

# wait_thrift PORT NAME [PING FLAGS]: until the server answers a real call, or fail naming the logs.
wait_thrift() {
    local port=$1 name=$2
    shift 2
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if thrift_answers "$port" "$@" --timeout 10; then
            return 0
        fi
        for part in master "$name"; do
            if [ -f "$RUN/$part.pid" ] && ! alive "$part"; then
                say "$part exited while starting; the end of $LOGS/$part.log:"
                log_tail "$LOGS/$part.log"
                exit 1
            fi
        done
        sleep 1
    done
    say "the Thrift server on port $port did not answer within $START_TIMEOUT s; see $LOGS/$name.log and $LOGS/master.log"
    log_tail "$LOGS/$name.log" 15
    exit 1
}

thrift_stop() {
    local port=$THRIFT_PORT signal=TERM
    while [ $# -gt 0 ]; do
        case $1 in
            --port) port=$2; shift 2 ;;
            --kill) signal=KILL; shift ;;
            *) die "thrift-stop: unknown option $1" ;;
        esac
    done
    stop_daemon "thrift-$port" "$signal" 20
}

# commands --------------------------------------------------------------------------------

admin() {
    resolve
    run_admin "$@"
}

run_admin() {  # DevAdmin with the jars there are (never changes them: HBase may be running)
    [ -f "$CONF/hbase-site.xml" ] || write_conf
    "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 "${JVM_FLAGS[@]}" \
        -Dlog4j2.configurationFile="$CONF/log4j2-quiet.properties" -cp "$(classpath)" swarm.dev.hbase.DevAdmin "$@"
}

# master_wait: until HBase serves requests (through a Thrift server of this data dir if one runs).
master_wait() {
    local f deadline=$((SECONDS + START_TIMEOUT))
    for f in "$RUN"/thrift-*.pid; do
        [ -e "$f" ] || continue
        if alive "$(basename "$f" .pid)"; then
            local port=${f##*/thrift-}
            wait_thrift "${port%.pid}" "$(basename "$f" .pid)"
            return 0
        fi
    done
    while ! run_admin ping >/dev/null 2>&1; do
        if ! alive master && ! listening "$ZK_PORT"; then
            say "HBase exited while starting; the end of $LOGS/master.log:"
            log_tail "$LOGS/master.log"
            exit 1
        fi
        ((SECONDS < deadline)) || die "HBase did not answer within $START_TIMEOUT s; see $LOGS/master.log"
        sleep 1
    done
}

locked() {  # one start or stop at a time per data dir
    mkdir -p "$DATA"
    exec 9>"$DATA/.lock"
    flock 9
}

status() {
    local code=1 f name
    if alive master; then
        say "HBase runs (pid $(pid_of master), ZooKeeper on $ZK_PORT, data in $DATA)"
    elif listening "$ZK_PORT"; then
        say "ZooKeeper answers on $ZK_PORT, from another data dir than $DATA"
    else
        say "HBase is stopped"
    fi
    for f in "$RUN"/thrift-*.pid; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .pid)
        alive "$name" && say "$name runs (pid $(pid_of "$name"))"
    done
    if thrift_answers "$THRIFT_PORT" --timeout 5; then
        say "the Thrift server on $THRIFT_PORT answers: $("$0" url)"
        code=0
    else
        say "nothing answers Thrift calls on $THRIFT_PORT"
    fi
    return $code
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    start)
        resolve  # also when HBase runs already: DevAdmin comes from this checkout's folder
        # shellcheck disable=SC2046 # the flags are words
        if thrift_answers "$THRIFT_PORT" $(thrift_ping_flags "$@") --timeout 5; then
            real_hbase "$THRIFT_PORT" $(thrift_ping_flags "$@")
            say "the Thrift server on $THRIFT_PORT answers: left as it is"
            exit 0
        fi
        locked
        started=$SECONDS
        master_start
        thrift_start "$@"
        say "ready in $((SECONDS - started)) s: $("$0" url)"
        ;;
    stop)
        locked
        signal=TERM
        [ "${1:-}" = "--kill" ] && signal=KILL
        for f in "$RUN"/thrift-*.pid; do
            [ -e "$f" ] || continue
            stop_daemon "$(basename "$f" .pid)" "$signal" 20
        done
        master_stop "${1:-}"
        ;;
    master-start) locked; master_start; master_wait ;;
    master-stop) locked; master_stop "$@" ;;
    thrift-start) thrift_start "$@" ;;
    thrift-stop) thrift_stop "$@" ;;
    status) status ;;
    admin) admin "$@" ;;
    resolve) resolve ;;
    url) echo "hbase://127.0.0.1:$THRIFT_PORT" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# The mysql-pitr demo: a throwaway server, the agent streaming its binlog to
# file:// storage, a snapshot, more writes, an "accidental" DROP TABLE, and a
# point-in-time restore to the moment before it into a new datadir, started
# and checked.
# Run it through `make demo` (which builds bin/mysql-pitr first). FLAVOR
# chooses the server: mariadb (the default: MariaDB from the host's
# packages) or mysql (MySQL 9.7 from the server root scripts/setup.sh builds
# in $MYSQL_PITR_ROOTS, by default /var/cache/mysql-pitr/roots).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${BIN:-bin/mysql-pitr}
FLAVOR=${FLAVOR:-mariadb}
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"

case $FLAVOR in
mariadb)
  NAME=MariaDB SERVER=mariadbd CLIENT=mariadb BINLOGTOOL=mariadb-binlog
  for tool in mariadbd mariadb-install-db mariadb mariadb-binlog curl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/setup.sh" >&2; exit 1; }
  done
  ;;
mysql)
  # The server root's wrappers run MySQL 9.7's programs as if installed;
  # mysql-pitr takes the restore's from there too (--server-bindir).
  BINDIR=${MYSQL_PITR_ROOTS:-/var/cache/mysql-pitr/roots}/mysql-9.7/.bin
  NAME="MySQL 9.7" SERVER=$BINDIR/mysqld CLIENT=$BINDIR/mysql BINLOGTOOL=$BINDIR/mysqlbinlog
  for tool in "$SERVER" "$CLIENT" "$BINLOGTOOL"; do
    [ -x "$tool" ] || { echo "$tool is missing: run scripts/setup.sh, which builds the MySQL 9.7 server root" >&2; exit 1; }
  done
  command -v curl >/dev/null || { echo "curl is missing: run scripts/setup.sh" >&2; exit 1; }
  export MYSQL_PITR_SERVER_BINDIR=$BINDIR
  ;;
*)
  echo "FLAVOR must be mariadb or mysql, not $FLAVOR" >&2; exit 2
  ;;
esac

DIR=$(mktemp -d /tmp/mysql-pitr-demo.XXXXXX)
SOCK=$DIR/mysqld.sock
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
sql() { "$CLIENT" --no-defaults -uroot -S "$SOCK" "$@"; }
asroot() { [ "$(id -u)" = 0 ] && echo --user=root || true; }

cleanup() {
  [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
  [ -n "${DB_PID:-}" ] && kill "$DB_PID" 2>/dev/null && wait "$DB_PID" 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# serve DATADIR SOCKET NAME [OPTIONS...] starts the server on DATADIR,
# listening on SOCKET only, in the background.
serve() {
  local data=$1 sock=$2 name=$3
  shift 3
  local -a args=(--no-defaults --datadir="$data" --tmpdir="$DIR/tmp" --socket="$sock" --skip-networking
    --log-error="$DIR/$name.log" --pid-file="$DIR/$name.pid")
  # MySQL wants its secure_file_priv directory to exist, and its X Plugin
  # would take /tmp/mysqlx.sock.
  [ "$FLAVOR" = mysql ] && args+=(--secure-file-priv="$DIR/files" --mysqlx=OFF)
  # shellcheck disable=SC2046
  "$SERVER" "${args[@]}" $(asroot) "$@" &
}

step "start a throwaway $NAME in $DIR (binlog on, ROW format, GTIDs)"
mkdir -p "$DIR/data" "$DIR/binlog" "$DIR/tmp" "$DIR/files"
if [ "$FLAVOR" = mysql ]; then
  # As the official image initialises it; the binlog is on by default, as
  # binlog.NNNNNN in the datadir.
  # shellcheck disable=SC2046
  "$SERVER" --no-defaults --initialize-insecure --datadir="$DIR/data" --tmpdir="$DIR/tmp" \
    --secure-file-priv="$DIR/files" $(asroot) >"$DIR/install.log" 2>&1
  BINLOG_DIR=$DIR/data
  serve "$DIR/data" "$SOCK" error --server-id=1 --gtid-mode=ON --enforce-gtid-consistency=ON
else
  # shellcheck disable=SC2046
  mariadb-install-db --no-defaults --datadir="$DIR/data" --auth-root-authentication-method=socket \
    --skip-test-db $(asroot) >"$DIR/install.log" 2>&1
  BINLOG_DIR=$DIR/binlog
  serve "$DIR/data" "$SOCK" error --log-bin="$DIR/binlog/mysql-bin" --binlog-format=ROW --server-id=1
fi
DB_PID=$!
for _ in $(seq 300); do sql -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
sql -e "SELECT VERSION() AS server"

step "create the agent's account (password in a file, never on a command line)"
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$PASSWORD" >"$DIR/password"; chmod 600 "$DIR/password"
if [ "$FLAVOR" = mysql ]; then
  # What `mysql-pitr grants --flavor mysql --role streamer,logical` prints.
  sql -e "SET sql_log_bin=0; CREATE USER pitr@localhost IDENTIFIED BY '$PASSWORD';
          GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, SHOW VIEW, TRIGGER, EVENT, BACKUP_ADMIN, RELOAD ON *.* TO pitr@localhost;"
  STATUS="SHOW BINARY LOG STATUS"
else
  sql -e "SET sql_log_bin=0; CREATE USER pitr@localhost IDENTIFIED BY '$PASSWORD';
          GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT, RELOAD, LOCK TABLES, SHOW VIEW, TRIGGER, EVENT ON *.* TO pitr@localhost;"
  STATUS="SHOW MASTER STATUS"
fi

PORT=19097
while (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do PORT=$((PORT + 1)); done
step "start the agent: stream the binlog to file://$DIR/archive, flushing every second"
# Not through run(): $! must be the agent itself, for cleanup to stop it.
printf '$ %s\n' "$BIN agent --dsn pitr@unix($SOCK)/ --password-file $DIR/password --storage file://$DIR/archive --spool-dir $DIR/spool --listen 127.0.0.1:$PORT --log-format text"
"$BIN" agent --dsn "pitr@unix($SOCK)/" --password-file "$DIR/password" --storage "file://$DIR/archive" \
  --spool-dir "$DIR/spool" --listen "127.0.0.1:$PORT" --log-format text >"$DIR/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
echo "agent ready: http://127.0.0.1:$PORT/status"

step "an application writes: a shop with customers and orders"
sql -e "CREATE DATABASE shop;
        CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(50));
        CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer INT, amount DECIMAL(10,2), at DATETIME(6));
        INSERT INTO shop.customers VALUES (1,'Ada'),(2,'Grace'),(3,'Linus');"
for i in $(seq 1 30); do
  sql -e "INSERT INTO shop.orders (customer, amount, at) VALUES ($((i % 3 + 1)), $i.50, NOW(6))"
done

step "take a snapshot (logical: a consistent parallel dump, straight to storage)"
MYSQL_PITR_PASSWORD=$PASSWORD run "$BIN" snapshot --dsn "pitr@unix($SOCK)/" --storage "file://$DIR/archive" --log-format text --log-level warn

step "the application keeps writing"
run sql -e "FLUSH BINARY LOGS"
for i in $(seq 31 60); do
  sql -e "INSERT INTO shop.orders (customer, amount, at) VALUES ($((i % 3 + 1)), $i.50, NOW(6))"
done
sql -e "SELECT COUNT(*) AS orders, SUM(amount) AS revenue FROM shop.orders"
BEFORE=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
sleep 1.2

step "$(date -u +%H:%M:%S) — someone drops the orders table"
run sql -e "DROP TABLE shop.orders"
read -r FILE POS _ < <(sql -N -e "$STATUS")
T0=$(date +%s.%N)
durable() { curl -sf "http://127.0.0.1:$PORT/status" | tr -d ' \n' | sed -n 's/.*"durable":{"file":"\([^"]*\)","pos":\([0-9]*\)}.*/\1 \2/p'; }
until [ "$(durable)" = "$FILE $POS" ]; do sleep 0.02; done
T1=$(date +%s.%N)
printf 'the DROP TABLE (binlog %s up to %s) was durable in storage %s s after it committed\n' "$FILE" "$POS" "$(awk "BEGIN{printf \"%.2f\", $T1 - $T0}")"

step "what the archive holds"
run "$BIN" list --storage "file://$DIR/archive"
echo
run curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^mysqlpitr_binlog_(archived_bytes_total|uploaded_objects_total|archive_lag_seconds|last_archived_commit)' || true

step "fetch the archive back as ordinary binlog files and compare with the server's"
run "$BIN" binlog fetch --storage "file://$DIR/archive" --out "$DIR/fetched"
for f in "$DIR/fetched/${FILE%.*}".*; do
  name=$(basename "$f")
  if [ "$name" = "$FILE" ]; then
    # The server's active file still carries the in-use flag a replica never sees; compare the rest.
    cmp <(tail -c +23 "$f") <(tail -c +23 "$BINLOG_DIR/$name" | head -c $(( $(stat -c %s "$f") - 22 ))) &&
      echo "$name: identical to the server's (active) file"
  else
    cmp "$f" "$BINLOG_DIR/$name" && echo "$name: identical to the server's file"
  fi
done

step "the standard tools read the archive: where exactly was the DROP?"
"$BINLOGTOOL" --no-defaults "$DIR/fetched/$FILE" | grep -B14 -i '^DROP TABLE' | grep -E '^# at |end_log_pos|^DROP TABLE' | tail -3

step "verify the archive: every object read back and checked, the chain from the snapshot whole"
run "$BIN" verify --storage "file://$DIR/archive"

step "restore to $BEFORE, just before the DROP, into a new datadir"
run "$BIN" restore --storage "file://$DIR/archive" --to "$BEFORE" --dry-run
echo
run "$BIN" restore --storage "file://$DIR/archive" --to "$BEFORE" --datadir "$DIR/restored" --log-format text --log-level warn

step "start a server on the restored datadir: the orders are back"
serve "$DIR/restored" "$DIR/restored.sock" restored
RESTORED_PID=$!
for _ in $(seq 300); do "$CLIENT" --no-defaults -uroot -S "$DIR/restored.sock" -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
run "$CLIENT" --no-defaults -uroot -S "$DIR/restored.sock" -e "SELECT COUNT(*) AS orders, SUM(amount) AS revenue FROM shop.orders"
kill "$RESTORED_PID"; wait "$RESTORED_PID" 2>/dev/null || true
echo
echo "The table is back with all 60 orders: every transaction committed before $BEFORE, none after."

#!/bin/bash
# docker-entrypoint.sh of mysql-pitr's test server images (internal/kubetest).
# The images are Debian roots, which have no entrypoint; production uses the
# official mysql and mariadb images, whose docker-entrypoint.sh this keeps the
# contract of, as far as the chart relies on it:
#
#   docker-entrypoint.sh SERVER [OPTION...]      (SERVER: mysqld or mariadbd)
#
#  - the datadir and socket are the server's own settings (SERVER OPTION...
#    --verbose --help), and the directories it needs are created;
#  - a datadir without a mysql directory is initialised: mysqld
#    --initialize-insecure, or mariadb-install-db with the official image's
#    options; a temporary server without networking sets root@localhost's
#    password and creates root@'%' (MYSQL_ROOT_HOST) from MYSQL_ROOT_PASSWORD
#    or MARIADB_ROOT_PASSWORD, each also read from a file named by the same
#    variable with _FILE (MariaDB's other root accounts are dropped; the time
#    zone tables are not loaded); then /docker-entrypoint-initdb.d/ is run in name
#    order: an executable *.sh is run, any other *.sh is sourced (with
#    docker_process_sql defined), a *.sql is fed to the client as root;
#  - then it execs SERVER OPTION....
set -eo pipefail
shopt -s nullglob

note() { printf '%s [Note] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*"; }
fail() {
	printf '%s [ERROR] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2
	exit 1
}

# file_env VAR: VAR from the file named by VAR_FILE, exported either way.
file_env() {
	local var=$1 file=${1}_FILE
	if [ -n "${!var:-}" ] && [ -n "${!file:-}" ]; then
		fail "both $var and $file are set (but are exclusive)"
	fi
	if [ -n "${!file:-}" ]; then
		export "$var"="$(<"${!file}")"
	fi
	unset "$file"
}

get_config() {
	local name=$1
	shift
	"$@" --verbose --help --log-bin-index="$(mktemp -u)" 2>/dev/null |
		awk -v n="$name" '$1 == n && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }'
}

# docker_process_sql [--dont-use-mysql-root-password] [CLIENT-OPTION...]
# runs the SQL on stdin as root on the temporary server.
docker_process_sql() {
	local password=$ROOT_PASSWORD
	if [ "${1:-}" = --dont-use-mysql-root-password ]; then
		password=
		shift
	fi
	MYSQL_PWD=$password "$CLIENT" --protocol=socket -uroot -hlocalhost --socket="$SOCKET" "$@"
}

sql_string() {
	local s=${1//\\/\\\\}
	printf '%s' "${s//\'/\\\'}"
}

case ${1:-} in
mysqld) FAMILY=mysql CLIENT=mysql ;;
mariadbd) FAMILY=mariadb CLIENT=mariadb ;;
*) exec "$@" ;;
esac

errors=$("$@" --verbose --help --log-bin-index="$(mktemp -u)" 2>&1 >/dev/null) ||
	fail "$1 failed while checking its configuration: $errors"
DATADIR=$(get_config datadir "$@")
SOCKET=$(get_config socket "$@")
DATADIR=${DATADIR%/}

file_env MYSQL_ROOT_PASSWORD
file_env MYSQL_ROOT_HOST
if [ "$FAMILY" = mariadb ]; then
	file_env MARIADB_ROOT_PASSWORD
	file_env MARIADB_ROOT_HOST
	ROOT_PASSWORD=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
	ROOT_HOST=${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}
else
	ROOT_PASSWORD=${MYSQL_ROOT_PASSWORD:-}
	ROOT_HOST=${MYSQL_ROOT_HOST:-%}
fi

dirs=("$DATADIR" "$(dirname "$SOCKET")")
if [ "$FAMILY" = mysql ]; then
	for conf in pid-file secure-file-priv; do
		dir=$(get_config "$conf" "$@")
		[ -n "$dir" ] && [ "$dir" != NULL ] || continue
		[ "$conf" = secure-file-priv ] || dir=$(dirname "$dir")
		dirs+=("$dir")
	done
fi
mkdir -p "${dirs[@]}"

if [ ! -d "$DATADIR/mysql" ]; then
	[ -n "$ROOT_PASSWORD" ] || fail "the datadir $DATADIR is uninitialised and no root password is given (MYSQL_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD or their _FILE)"
	ls /docker-entrypoint-initdb.d/ >/dev/null
	note "initialising $DATADIR"
	if [ "$FAMILY" = mysql ]; then
		"$@" --initialize-insecure --default-time-zone=SYSTEM
		"$@" --daemonize --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" ||
			fail "unable to start the temporary server"
	else
		mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal "${@:2}" \
			--cross-bootstrap --skip-test-db --old-mode=UTF8_IS_UTF8MB3 --default-time-zone=SYSTEM \
			--enforce-storage-engine= --skip-log-bin --expire-logs-days=0 \
			--loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0
		"$@" --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" --expire-logs-days=0 \
			--skip-slave-start --loose-innodb_buffer_pool_load_at_startup=0 &
		pid=$!
		for i in $(seq 60); do
			docker_process_sql --dont-use-mysql-root-password --database=mysql <<<'SELECT 1' >/dev/null 2>&1 && break
			kill -0 "$pid" 2>/dev/null || fail "the temporary server exited"
			sleep 1
		done
	fi
	password=$(sql_string "$ROOT_PASSWORD")
	if [ "$FAMILY" = mysql ]; then
		docker_process_sql --dont-use-mysql-root-password --database=mysql <<-EOSQL
			SET autocommit = 1;
			SET @@SESSION.SQL_LOG_BIN = 0;
			ALTER USER 'root'@'localhost' IDENTIFIED BY '$password';
			GRANT ALL ON *.* TO 'root'@'localhost' WITH GRANT OPTION;
			FLUSH PRIVILEGES;
			CREATE USER 'root'@'$ROOT_HOST' IDENTIFIED BY '$password';
			GRANT ALL ON *.* TO 'root'@'$ROOT_HOST' WITH GRANT OPTION;
			DROP DATABASE IF EXISTS test;
		EOSQL
	else
		# mariadb-install-db also makes root@127.0.0.1, root@::1 and
		# root@<hostname> without a password; the image drops them.
		docker_process_sql --dont-use-mysql-root-password --database=mysql <<-EOSQL
			SET @@SESSION.SQL_LOG_BIN = 0;
			DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
			EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
			SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$password');
			CREATE USER 'root'@'$ROOT_HOST' IDENTIFIED BY '$password';
			GRANT ALL ON *.* TO 'root'@'$ROOT_HOST' WITH GRANT OPTION;
			GRANT PROXY ON ''@'%' TO 'root'@'$ROOT_HOST' WITH GRANT OPTION;
		EOSQL
	fi
	unset password
	for f in /docker-entrypoint-initdb.d/*; do
		case $f in
		*.sh)
			if [ -x "$f" ]; then
				note "running $f"
				"$f"
			else
				note "sourcing $f"
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql)
			note "running $f"
			docker_process_sql <"$f"
			;;
		*) note "ignoring $f" ;;
		esac
	done
	if [ "$FAMILY" = mysql ]; then
		MYSQL_PWD=$ROOT_PASSWORD mysqladmin -uroot --socket="$SOCKET" shutdown
	else
		kill "$pid"
		wait "$pid"
	fi
	note "$DATADIR initialised"
fi
exec "$@"

#!/bin/sh
# server.sh starts the database server through the image's own
# docker-entrypoint.sh, after what the image cannot do:
#
#  - it refuses to start while $PITR_VOLUME/restore-in-progress exists: a
#    restore was interrupted and the datadir may be half-restored. The restore
#    init container removes the file when it finishes; remove it by hand only
#    to start on whatever the datadir holds.
#  - it derives server_id from the pod's ordinal (SERVER_ID_BASE + N), so
#    every pod of the StatefulSet has its own.
#  - on a datadir that is already initialised it makes the Secrets the
#    passwords: the server runs an --init-file (on the memory-backed
#    $PITR_RUN_DIR, readable by the server's user only) that sets root's
#    password (root@localhost and root@'%', as the image made them) from
#    the root Secret, drops MariaDB's root@127.0.0.1, root@::1 and
#    root@<hostname>, which the image drops too, and creates the agent's
#    account if it is missing with its password and privileges from its
#    Secret and the values. A restored datadir needs it: its built-in
#    accounts are a new server's, without passwords, and it lacks the
#    agent's (a snapshot leaves out the account it was taken with). A
#    password changed in a Secret takes effect at the next start. A new
#    datadir gets the same from the image's entrypoint and init-pitr-user.sh.
#
# Environment: POD_NAME, SERVER_ID_BASE, SERVER_BINARY (mysqld or mariadbd),
# PITR_VOLUME, PITR_CNF, PITR_RUN_DIR, PITR_USER, PITR_USER_HOST,
# PITR_PASSWORD_FILE, PITR_GRANTS, MYSQL_ROOT_PASSWORD_FILE or
# MARIADB_ROOT_PASSWORD_FILE.
set -eu

if [ -e "$PITR_VOLUME/restore-in-progress" ]; then
	echo "mysql-pitr: $PITR_VOLUME/restore-in-progress exists (request $(cat "$PITR_VOLUME/restore-in-progress" 2>/dev/null)):" \
		"refusing to start on a half-restored datadir; the restore init container retries it on the next pod start" >&2
	exit 1
fi

ordinal=${POD_NAME##*-}
case $ordinal in
'' | *[!0-9]*)
	echo "mysql-pitr: cannot derive an ordinal from pod name $POD_NAME" >&2
	exit 1
	;;
esac
server_id=$((SERVER_ID_BASE + ordinal))

# sql_string FILE prints the first line of FILE escaped for a single-quoted
# SQL string, and fails when it is empty.
sql_string() {
	v=$(head -n 1 "$1" | tr -d '\r')
	if [ -z "$v" ]; then
		echo "mysql-pitr: $1 is empty: the account needs a password" >&2
		return 1
	fi
	printf '%s' "$v" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"
}

datadir=$(sed -n 's/^[[:space:]]*datadir[[:space:]]*=[[:space:]]*//p' "$PITR_CNF" | head -n 1)
set --
if [ -d "$datadir/mysql" ]; then
	root_password=$(sql_string "${MYSQL_ROOT_PASSWORD_FILE:-${MARIADB_ROOT_PASSWORD_FILE:-}}")
	pitr_password=$(sql_string "$PITR_PASSWORD_FILE")
	init=$PITR_RUN_DIR/mysql-pitr-accounts.sql
	# One statement per line: the servers read an init file line by line.
	(
		umask 077
		{
			printf '%s\n' "SET @@SESSION.SQL_LOG_BIN = 0;"
			if [ "$SERVER_BINARY" = mariadbd ]; then
				printf '%s\n' "DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1';"
				printf '%s\n' "EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS \\'root\\'@\\'', @@hostname, '\\'');"
			fi
			printf '%s\n' "ALTER USER 'root'@'localhost' IDENTIFIED BY '${root_password}';"
			printf '%s\n' "ALTER USER IF EXISTS 'root'@'%' IDENTIFIED BY '${root_password}';"
			printf '%s\n' "CREATE USER IF NOT EXISTS '${PITR_USER}'@'${PITR_USER_HOST}' IDENTIFIED BY '${pitr_password}';"
			printf '%s\n' "ALTER USER '${PITR_USER}'@'${PITR_USER_HOST}' IDENTIFIED BY '${pitr_password}';"
			printf '%s\n' "GRANT ${PITR_GRANTS} ON *.* TO '${PITR_USER}'@'${PITR_USER_HOST}';"
		} >"$init"
	)
	unset root_password pitr_password
	set -- --init-file="$init"
fi

# --defaults-extra-file must come first; the entrypoint passes these
# arguments to the server for its config check, its first-start
# initialisation and the real start alike.
exec docker-entrypoint.sh "$SERVER_BINARY" --defaults-extra-file="$PITR_CNF" --server-id="$server_id" "$@"

# init-pitr-user.sh is sourced by the server image's docker-entrypoint.sh when
# it initialises an empty datadir (not on later starts). It creates the account
# the mysql-pitr agent connects as, with the password from the mounted Secret
# file, so the password is never in the environment or in a process's argv.
#
# Environment: PITR_USER, PITR_USER_HOST, PITR_PASSWORD_FILE, PITR_GRANTS.

pitr_password=$(head -n 1 "$PITR_PASSWORD_FILE" | tr -d '\r')
if [ -z "$pitr_password" ]; then
	echo "mysql-pitr: $PITR_PASSWORD_FILE is empty: the agent's account needs a password" >&2
	exit 1
fi
# Escape backslashes and quotes for a single-quoted SQL string.
pitr_password=$(printf '%s' "$pitr_password" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g")

# Not binlogged: the account is part of every fresh server, like root.
docker_process_sql <<EOSQL
SET @@SESSION.SQL_LOG_BIN = 0;
CREATE USER IF NOT EXISTS '${PITR_USER}'@'${PITR_USER_HOST}' IDENTIFIED BY '${pitr_password}';
GRANT ${PITR_GRANTS} ON *.* TO '${PITR_USER}'@'${PITR_USER_HOST}';
EOSQL
unset pitr_password

#!/bin/sh
# server.sh starts the database server through the image's own
# docker-entrypoint.sh, after two checks the image cannot make:
#
#  - it refuses to start while $PITR_VOLUME/restore-in-progress exists: a
#    restore was interrupted and the datadir may be half-restored. The restore
#    init container removes the file when it finishes; remove it by hand only
#    to start on whatever the datadir holds.
#  - it derives server_id from the pod's ordinal (SERVER_ID_BASE + N), so
#    every pod of the StatefulSet has its own.
#
# Environment: POD_NAME, SERVER_ID_BASE, SERVER_BINARY (mysqld or mariadbd),
# PITR_VOLUME, PITR_CNF.
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

# --defaults-extra-file must come first; the entrypoint passes these
# arguments to the server for its config check, its first-start
# initialisation and the real start alike.
exec docker-entrypoint.sh "$SERVER_BINARY" --defaults-extra-file="$PITR_CNF" --server-id="$server_id" "$@"

#!/bin/sh
# restore-job.sh runs in the Job that kubectl mysql-pitr restore --to-new-pvc
# creates: it restores the archive of $POD_NAME (the storage URL in
# MYSQL_PITR_STORAGE refers to it) to $PITR_TO into $PITR_DATADIR on the new,
# empty PVC, and reports the restore's marker in the container's termination
# message, where mysql-pitr reads it. The pod itself is not touched.
#
# Storage flags and AWS settings come from the environment (MYSQL_PITR_*,
# AWS_*); credentials are files.
#
# Environment: POD_NAME, PITR_TO (RFC 3339 time or latest), PITR_REQUEST (an
# id echoed in the report), PITR_BINARY, PITR_DATADIR, PITR_THREADS (0: the
# binary's default), PITR_TERMINATION_LOG.
set -eu

log() { echo "mysql-pitr restore job: $*" >&2; }

case $PITR_TO in
'' | *[!A-Za-z0-9:.+-]*)
	log "PITR_TO=$PITR_TO: want an RFC 3339 time with a zone (2026-11-27T10:41:07Z) or latest"
	exit 1
	;;
esac
case $PITR_REQUEST in
'' | *[!A-Za-z0-9._-]*)
	log "PITR_REQUEST=$PITR_REQUEST: want letters, digits, '.', '_' or '-'"
	exit 1
	;;
esac

log "restoring the archive of $POD_NAME ($MYSQL_PITR_STORAGE) to $PITR_TO into $PITR_DATADIR"
set -- restore --to "$PITR_TO" --datadir "$PITR_DATADIR"
if [ "${PITR_THREADS:-0}" != 0 ]; then
	set -- "$@" --threads "$PITR_THREADS"
fi
"$PITR_BINARY" "$@"
sync

json_marker=$PITR_DATADIR/mysql-pitr-restore.json
{
	printf '{"request":"%s","result":"restored"' "$PITR_REQUEST"
	if [ -f "$json_marker" ] && [ "$(wc -c <"$json_marker")" -le 3500 ]; then
		printf ',"marker":'
		cat "$json_marker"
	fi
	printf '}\n'
} >"${PITR_TERMINATION_LOG:-/dev/termination-log}" || log "could not write the report to ${PITR_TERMINATION_LOG:-/dev/termination-log}"
log "done"

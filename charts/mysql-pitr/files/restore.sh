#!/bin/sh
# restore.sh runs in an init container before the database server starts. It
# restores this pod's datadir when the restore-requests ConfigMap (mounted at
# $PITR_REQUESTS_DIR, one key per pod name) holds a request for this pod that
# the datadir has not yet served. A request is two lines:
#
#   id=<request id: letters, digits, . _ -; new for every restore>
#   to=<RFC 3339 time with a zone, or latest>
#
# Steps, each safe to repeat after a crash:
#  1. no request, or its id equals the id in $PITR_DATADIR/mysql-pitr-request:
#     nothing to do (the datadir already is that restore's result);
#  2. write $PITR_VOLUME/restore-in-progress (the server's wrapper refuses to
#     start while it exists);
#  3. mysql-pitr restore --force: the old datadir's contents are moved aside to
#     $PITR_DATADIR.before-restore-TIME on the same volume (a rename, which is
#     why the datadir is a subdirectory of the volume and not its root);
#  4. write the request id into the datadir, then remove restore-in-progress.
#
# Storage flags and AWS settings come from the environment (MYSQL_PITR_*,
# AWS_*); credentials are files.
#
# Environment: POD_NAME, PITR_BINARY, PITR_REQUESTS_DIR, PITR_VOLUME,
# PITR_DATADIR, PITR_THREADS (0: the binary's default), PITR_TERMINATION_LOG
# (the container's terminationMessagePath).
set -eu

log() { echo "mysql-pitr restore: $*" >&2; }

# report writes the container's termination message, which mysql-pitr
# kubectl mysql-pitr restore reads from the pod's status ($PITR_TERMINATION_LOG): the request this datadir now
# serves, the result ($1: restored or already-restored) and the restore's
# marker JSON (left out if it might not fit the kubelet's 4096 bytes).
report() {
	json_marker=$PITR_DATADIR/mysql-pitr-restore.json
	{
		printf '{"request":"%s","result":"%s"' "$id" "$1"
		if [ -f "$json_marker" ] && [ "$(wc -c <"$json_marker")" -le 3500 ]; then
			printf ',"marker":'
			cat "$json_marker"
		fi
		printf '}\n'
	} >"${PITR_TERMINATION_LOG:-/dev/termination-log}" 2>/dev/null || true
}

in_progress="$PITR_VOLUME/restore-in-progress"
request="$PITR_REQUESTS_DIR/$POD_NAME"
marker="$PITR_DATADIR/mysql-pitr-request"

if [ ! -f "$request" ]; then
	if [ -e "$in_progress" ]; then
		log "$in_progress exists but there is no request for $POD_NAME any more: the datadir may be half-restored." \
			"Add the request back to retry, or remove $in_progress to start the server on the datadir as it is."
		exit 1
	fi
	exit 0
fi

field() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$request" | head -n 1 | tr -d '\r' | sed 's/[[:space:]]*$//'; }
id=$(field id)
to=$(field to)
case $id in
'' | *[!A-Za-z0-9._-]*)
	log "request for $POD_NAME: id=$id: want letters, digits, '.', '_' or '-'"
	exit 1
	;;
esac
case $to in
'' | *[!A-Za-z0-9:.+-]*)
	log "request $id: to=$to: want an RFC 3339 time with a zone (2026-11-27T10:41:07Z) or latest"
	exit 1
	;;
esac

done_id=$(cat "$marker" 2>/dev/null || true)
if [ "$done_id" = "$id" ] && [ ! -e "$in_progress" ]; then
	log "request $id already restored into $PITR_DATADIR"
	report already-restored
	exit 0
fi

log "request $id: restoring $PITR_DATADIR to $to from $MYSQL_PITR_STORAGE"
printf '%s\n' "$id" >"$in_progress.tmp"
mv -f "$in_progress.tmp" "$in_progress"

set -- restore --to "$to" --datadir "$PITR_DATADIR" --force
if [ "${PITR_THREADS:-0}" != 0 ]; then
	set -- "$@" --threads "$PITR_THREADS"
fi
"$PITR_BINARY" "$@"

printf '%s\n' "$id" >"$marker.tmp"
mv -f "$marker.tmp" "$marker"
sync
rm -f "$in_progress"
sync
report restored
log "request $id: done; old datadir contents are in $PITR_DATADIR.before-restore-* (delete them when no longer needed)"

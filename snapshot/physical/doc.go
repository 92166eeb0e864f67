// Package physical takes physical snapshots of a server into the archive
// and restores them into a datadir: a copy of the server's files rather
// than a dump of its rows, restored without loading a row.
//
// Take streams mariadb-backup's (MariaDB) or xtrabackup's (MySQL) xbstream
// output through zstd into storage, in parts, without staging it on local
// disk; on MySQL without xtrabackup it uses the server's clone plugin
// instead (clone.go), which stages a copy of the data in a directory on the
// server's host and stores it as a tar. Restore fetches and checks the parts, unpacks them
// into a staging directory beside the datadir (package snapshot's Staging)
// and, for a backup tool's stream, prepares it with the same tool. Tool
// names what a server's snapshots are taken with, Check what Take needs
// before any work.
package physical

// Package binlog is the heart of mysql-pitr: it archives a MySQL or MariaDB
// server's binary log continuously into storage, and reads the archive back
// for restores.
//
// Start reading at Streamer (streamer.go): its Run connects to the Source
// (source.go: the server, its flavor and settings) as a replica, hands the
// raw events to a Writer (writer.go), which writes them byte for byte into
// segments in a local Spool (spool.go), tracking where transactions begin
// and end (Tracker, txn.go), and an Uploader (uploader.go) moves sealed
// segments to storage, fenced so that a superseded agent cannot write.
// plan.go decides where a stream starts and when a new timeline begins;
// Compactor (compact.go) merges a closed file's small segments.
//
// The other half reads the archive: OpenSegment and Fetch (fetch.go) give
// back ordinary binlog files, Scanner (scan.go) and Header (event.go) read
// their events, and Server (server.go) serves them to a replaying server
// over the replication protocol. The archive's keys, segment records and
// manifests are package catalog's.
package binlog

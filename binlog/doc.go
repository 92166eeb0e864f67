// Package binlog archives a MySQL or MariaDB server's binary log and gives
// it back. It holds three things:
//
//   - The archive path, replica stream to stored segments: a Streamer
//     connects as a replica (Source), a Writer cuts the events it receives
//     into segments, byte for byte as the server wrote them, a Spool keeps
//     sealed segments on local disk, and an Uploader stores them; a
//     Compactor later merges the segments of closed files. A step that
//     fails stops the stream, which resumes from what is durable; when the
//     server no longer has, or no longer continues, what the archive
//     needs, a new timeline records the gap. Nothing is skipped.
//   - Reading binlog bytes: event headers and the few event bodies that
//     matter (event.go, tagged.go), transaction boundaries (Tracker), a
//     Scanner over a file, and archived segments read back and checked
//     (OpenSegment, Fetch).
//   - A Server that serves fetched binlog files over the replication
//     protocol, for restores that replay through a server.
//
// Start reading at Streamer.Run in streamer.go, then plan.go for where
// streaming starts (resume or new timeline), writer.go for how events
// become segments, and uploader.go for how they reach storage, fenced so
// that a superseded agent cannot write. The archive's keys, segment
// records and manifests are package catalog's.
package binlog

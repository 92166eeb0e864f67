package restore

// The phases of a restore, in the order they run.
const (
	// PhaseDownload fetches and verifies the binlog to replay.
	PhaseDownload = "download"
	// PhaseSnapshot extracts a physical snapshot or loads a logical one.
	PhaseSnapshot = "snapshot"
	// PhaseReplay applies the binlog up to the stop.
	PhaseReplay = "replay"
)

// Progress is how far one phase has come, in bytes: binlog bytes written
// for PhaseDownload, the snapshot's uncompressed bytes for PhaseSnapshot,
// binlog bytes applied for PhaseReplay. Total is 0 when unknown.
type Progress struct {
	Phase       string
	Done, Total int64
}

// reporter sends Progress to a callback that may be nil.
type reporter func(Progress)

func (r reporter) report(phase string, done, total int64) {
	if r != nil {
		r(Progress{Phase: phase, Done: done, Total: total})
	}
}

// replayed converts a replica's position into binlog bytes applied: the
// whole ranges of the files before file, and the part of file's range
// before pos.
func (s *Stop) replayed(file string, pos uint64) int64 {
	var done int64
	for _, f := range s.Files {
		switch {
		case f.Name < file:
			done += int64(f.To - f.From)
		case f.Name == file && pos > f.From:
			done += int64(min(pos, f.To) - f.From)
		}
	}
	return done
}

// replayBytes is the size of the whole replay range.
func (s *Stop) replayBytes() int64 {
	var n int64
	for _, f := range s.Files {
		n += int64(f.To - f.From)
	}
	return n
}

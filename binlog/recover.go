package binlog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// headSuffix names the head of a partial segment file: written by
// Writer.Sync the first time it makes the file's events durable, it says
// where the events start, so that a crashed agent can seal them.
const headSuffix = ".head"

// partialHead is what sealing a partial segment file needs besides its
// bytes: the segment record as it was opened, the transaction open at its
// start, and the binlog file's format.
type partialHead struct {
	Segment    catalog.Segment `json:"segment"`
	OpenTxn    *TxnState       `json:"open_txn,omitempty"`
	Format     Format          `json:"format"`
	HaveFormat bool            `json:"have_format,omitempty"`
}

// recoverPartials seals the events of every partial segment file with a
// head: events a writer made durable (see Writer.Sync) and a semi-sync
// source may have been told are. Each file's whole events are sealed, up
// to the first one that is cut short or whose checksum fails; a file whose
// events are already sealed or uploaded is dropped.
func (s *Spool) recoverPartials() error {
	heads, err := filepath.Glob(filepath.Join(s.dir, partialPfx+"*"+headSuffix))
	if err != nil {
		return err
	}
	type partial struct {
		path string
		head partialHead
	}
	var found []partial
	for _, hp := range heads {
		b, err := os.ReadFile(hp)
		if err != nil {
			return fmt.Errorf("read spool %s: %w", filepath.Base(hp), err)
		}
		var h partialHead
		if err := json.Unmarshal(b, &h); err != nil {
			return fmt.Errorf("decode spool %s: %w", filepath.Base(hp), err)
		}
		found = append(found, partial{path: strings.TrimSuffix(hp, headSuffix), head: h})
	}
	if len(found) == 0 {
		return nil
	}
	sort.Slice(found, func(i, j int) bool { return segmentBefore(&found[i].head.Segment, &found[j].head.Segment) })
	pending, err := s.Pending()
	if err != nil {
		return err
	}
	tail, err := s.Tail()
	if err != nil {
		return err
	}
	for _, p := range found {
		if !alreadySealed(&p.head.Segment, pending.Segments, tail) {
			if err := s.recoverPartial(p.path, p.head); err != nil {
				return fmt.Errorf("recover spool %s: %w", filepath.Base(p.path), err)
			}
			if pending, err = s.Pending(); err != nil {
				return err
			}
		}
		_ = os.Remove(p.path)
		_ = os.Remove(p.path + headSuffix)
	}
	return nil
}

// alreadySealed reports whether the segment that starts as seg does is
// sealed in the spool already, or is in storage (the spool's tail is at or
// past it).
func alreadySealed(seg *catalog.Segment, sealed []*catalog.Segment, tail Tail) bool {
	for _, p := range sealed {
		if p.Timeline == seg.Timeline && !segmentBefore(p, seg) {
			return true
		}
	}
	if t := tail.Segment; t != nil {
		if t.Timeline != seg.Timeline {
			return t.Timeline > seg.Timeline
		}
		return t.FileNum > seg.FileNum || (t.FileNum == seg.FileNum && t.End > seg.Start)
	}
	return false
}

// recoverPartial seals the whole events of the partial file at path, which
// start as head says, through a writer of their own.
func (s *Spool) recoverPartial(path string, head partialHead) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	seg := head.Segment
	w, err := NewWriter(WriterConfig{Spool: s, Timeline: seg.Timeline, TimelineUID: seg.TimelineUID})
	if err != nil {
		return err
	}
	w.file, w.fileNum, w.pos, w.prevEnd = seg.File, seg.FileNum, seg.Start, seg.Prev
	w.tracker.Restore(head.OpenTxn)
	if head.HaveFormat {
		w.format = head.Format
		w.tracker.SetFormat(head.Format)
	}
	for off := 0; off < len(data); {
		ev, ok := wholeEvent(data[off:], w.format)
		if !ok {
			break
		}
		if err := w.Handle(ev); err != nil {
			if errors.Is(err, ErrSpool) {
				return err
			}
			break // not an event that continues the file: the rest was never written whole
		}
		off += len(ev)
	}
	return w.Close()
}

// wholeEvent returns the event at the start of b, if b holds all of it and,
// in a file of format f with checksums, its checksum matches.
func wholeEvent(b []byte, f Format) ([]byte, bool) {
	h, err := ParseHeader(b)
	if err != nil || int(h.Size) > len(b) {
		return nil, false
	}
	ev := b[:h.Size]
	if f.Checksum && h.Type != FormatDescription {
		n := len(ev)
		if n < HeaderSize+4 || crc32.ChecksumIEEE(ev[:n-4]) != binary.LittleEndian.Uint32(ev[n-4:]) {
			return nil, false
		}
	}
	return ev, true
}

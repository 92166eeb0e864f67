// Package catalog is the archive's format on top of storage: where each kind
// of object lives (keys), the records that describe them (segment index
// records, timelines, the writer's lease), and reading them back.
//
// Layout under the storage root:
//
//	archive.json                                               what makes the location an archive (ArchiveKey)
//	lease.json                                                 the single writer's lease
//	generations/<gen>.json                                     a writer generation's claim (create-only)
//	generations/<gen>-fence-<timeline>-<filenum>-<pos>.json    where that generation took the archive over
//	binlog/<timeline>/timeline.g<gen>.json                     where the timeline starts and why
//	binlog/<timeline>/complete.g<gen>.json                     how far the archive is known complete
//	binlog/<timeline>/<filenum>/<start>-<end>.g<gen>.zst       archived binlog bytes [start,end) of one file, zstd
//	binlog/<timeline>/<filenum>/<start>-<end>.g<gen>.json      the segment's index record, written after the data
//
// Numbers are zero-padded so that listing order is archive order: timeline
// (6 digits), binlog file number (10), byte positions (12), generation (10).
// A segment exists only once its index record exists; data without one is an
// orphan of an interrupted upload. Keys written before writer generations
// existed carry no ".g<gen>" part: their generation is 0.
package catalog

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Key prefixes and names.
const (
	LeaseKey      = "lease.json"
	BinlogPrefix  = "binlog/"
	timelineStem  = "timeline"
	timelineFile  = timelineStem + segmentRecord
	segmentData   = ".zst"
	segmentRecord = ".json"
	// genMark starts the generation part of a key; genWidth is its digits.
	genMark  = ".g"
	genWidth = 10
)

// ErrBadKey is wrapped by errors about keys that do not parse.
var ErrBadKey = errors.New("not a catalog key")

// TimelineID names a timeline: a stretch of archive that is one continuous,
// never-forked history of one server.
type TimelineID uint32

// String formats the id as it appears in keys.
func (id TimelineID) String() string { return fmt.Sprintf("%06d", uint32(id)) }

// ParseTimelineID parses a key component or flag value such as "000003" or "3".
func ParseTimelineID(s string) (TimelineID, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: timeline %q", ErrBadKey, s)
	}
	return TimelineID(n), nil
}

// TimelinePrefix is the prefix of every key of a timeline.
func TimelinePrefix(tl TimelineID) string { return BinlogPrefix + tl.String() + "/" }

// TimelineKey is the key of a timeline's record as written before writer
// generations existed (generation 0).
func TimelineKey(tl TimelineID) string { return TimelinePrefix(tl) + timelineFile }

// Key is the key of the timeline's record.
func (t *Timeline) Key() string { return TimelineRecordKey(t.ID, t.Gen) }

// TimelineRecordKey is the key of a timeline's record as generation gen
// wrote it; TimelineKey(tl) is TimelineRecordKey(tl, 0).
func TimelineRecordKey(tl TimelineID, gen Generation) string {
	return TimelinePrefix(tl) + timelineStem + genSuffix(gen) + segmentRecord
}

// SegmentRef locates a segment: timeline, binlog file number and byte
// range, and the writer generation that stored it.
type SegmentRef struct {
	Timeline TimelineID
	FileNum  uint64
	Start    uint64
	End      uint64
	Gen      Generation
}

func (r SegmentRef) stem() string {
	return fmt.Sprintf("%s%010d/%012d-%012d%s", TimelinePrefix(r.Timeline), r.FileNum, r.Start, r.End, genSuffix(r.Gen))
}

// genSuffix is the ".g<gen>" part of a key; generation 0 (keys written
// before generations existed) has none.
func genSuffix(g Generation) string {
	if g == 0 {
		return ""
	}
	return genMark + g.String()
}

// cutGen splits a trailing ".g<gen>" off s; without one, gen is 0. ok is
// false when the suffix is there but malformed (or names generation 0).
func cutGen(s string) (rest string, gen Generation, ok bool) {
	i := strings.LastIndex(s, genMark)
	if i < 0 {
		return s, 0, true
	}
	digits := s[i+len(genMark):]
	if len(digits) != genWidth || !allDigits(digits) {
		return s, 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 {
		return s, 0, false
	}
	return s[:i], Generation(n), true
}

// DataKey is the key of the segment's zstd-compressed binlog bytes.
func (r SegmentRef) DataKey() string { return r.stem() + segmentData }

// RecordKey is the key of the segment's index record.
func (r SegmentRef) RecordKey() string { return r.stem() + segmentRecord }

// ParseSegmentKey parses a segment data or record key and reports which it is.
func ParseSegmentKey(key string) (ref SegmentRef, isRecord bool, err error) {
	bad := func() (SegmentRef, bool, error) { return SegmentRef{}, false, fmt.Errorf("%w: %q", ErrBadKey, key) }
	rest, ok := strings.CutPrefix(key, BinlogPrefix)
	if !ok {
		return bad()
	}
	switch {
	case strings.HasSuffix(rest, segmentRecord):
		isRecord, rest = true, strings.TrimSuffix(rest, segmentRecord)
	case strings.HasSuffix(rest, segmentData):
		rest = strings.TrimSuffix(rest, segmentData)
	default:
		return bad()
	}
	rest, gen, ok := cutGen(rest)
	if !ok {
		return bad()
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || len(parts[0]) != 6 || len(parts[1]) != 10 || len(parts[2]) != 25 || parts[2][12] != '-' {
		return bad()
	}
	tl, err := ParseTimelineID(parts[0])
	if err != nil {
		return bad()
	}
	nums := [3]uint64{}
	for i, s := range []string{parts[1], parts[2][:12], parts[2][13:]} {
		if !allDigits(s) {
			return bad()
		}
		nums[i], _ = strconv.ParseUint(s, 10, 64)
	}
	ref = SegmentRef{Timeline: tl, FileNum: nums[0], Start: nums[1], End: nums[2], Gen: gen}
	if ref.End <= ref.Start {
		return bad()
	}
	return ref, isRecord, nil
}

// ParseTimelineKey parses a timeline record key, of any generation.
func ParseTimelineKey(key string) (TimelineID, error) {
	id, _, err := ParseTimelineRecordKey(key)
	return id, err
}

// ParseTimelineRecordKey parses a timeline record key into its timeline
// and the generation that wrote it.
func ParseTimelineRecordKey(key string) (TimelineID, Generation, error) {
	return parseTimelineFile(key, timelineStem)
}

// parseTimelineFile parses "binlog/<timeline>/<stem>[.g<gen>].json".
func parseTimelineFile(key, stem string) (TimelineID, Generation, error) {
	bad := fmt.Errorf("%w: %q", ErrBadKey, key)
	rest, ok := strings.CutPrefix(key, BinlogPrefix)
	if !ok {
		return 0, 0, bad
	}
	id, name, ok := strings.Cut(rest, "/")
	if !ok || len(id) != 6 || !allDigits(id) {
		return 0, 0, bad
	}
	name, ok = strings.CutSuffix(name, segmentRecord)
	if !ok {
		return 0, 0, bad
	}
	name, gen, ok := cutGen(name)
	if !ok || name != stem {
		return 0, 0, bad
	}
	tl, err := ParseTimelineID(id)
	if err != nil {
		return 0, 0, bad
	}
	return tl, gen, nil
}

// FileNumber returns the numeric suffix of a binlog file name
// ("mysql-bin.000042" → 42), which orders a server's files.
func FileNumber(name string) (uint64, error) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || i == len(name)-1 || !allDigits(name[i+1:]) {
		return 0, fmt.Errorf("binlog file name %q has no numeric suffix", name)
	}
	n, err := strconv.ParseUint(name[i+1:], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("binlog file name %q: %w", name, err)
	}
	return n, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

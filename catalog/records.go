package catalog

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Position is a place in a server's binlog: a file and a byte offset in it.
type Position struct {
	File string `json:"file"`
	Pos  uint64 `json:"pos"`
}

// String formats the position as FILE:POS.
func (p Position) String() string { return fmt.Sprintf("%s:%d", p.File, p.Pos) }

// Segment is the index record of one archived segment: a byte range of one
// binlog file, stored zstd-compressed under Ref.DataKey().
type Segment struct {
	Timeline TimelineID `json:"timeline"`
	// Gen is the writer generation that stored the segment (0: before
	// generations existed; a segment waiting in the spool has none yet).
	Gen Generation `json:"gen,omitempty"`
	// File is the binlog file name on the server; FileNum its numeric suffix.
	File    string `json:"file"`
	FileNum uint64 `json:"file_num"`
	// Start and End bound the archived bytes [Start, End) of File.
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
	// TxnEnd is the end of the last transaction that completes inside this
	// segment, or of the last event outside any transaction: the furthest
	// position a restore may stop at using this segment. Bytes after it
	// belong to a transaction that continues in the next segment. Zero if
	// no such position falls in the segment.
	TxnEnd uint64 `json:"txn_end"`
	// OpenTxn is set when the segment ends inside a transaction: what is
	// known of that transaction so far (its start, GTID, MySQL commit time).
	OpenTxn json.RawMessage `json:"open_txn,omitempty"`
	// Prev is set on a segment that starts a binlog file (Start == 4) and
	// continues the archive of an earlier file: where that file's archive
	// ended. It chains files, so a missing object is noticed.
	Prev *Position `json:"prev,omitempty"`
	// FileEnds is set when the segment holds the file's last event.
	FileEnds bool `json:"file_ends,omitempty"`
	// Events and Transactions count events and transactions completed in the segment.
	Events       int `json:"events"`
	Transactions int `json:"transactions"`
	// FirstEventTime and LastEventTime are the event header timestamps.
	FirstEventTime time.Time `json:"first_event_time"`
	LastEventTime  time.Time `json:"last_event_time"`
	// FirstCommitTime and LastCommitTime bound the commit times of the
	// transactions completed in the segment (zero when none).
	FirstCommitTime time.Time `json:"first_commit_time,omitzero"`
	LastCommitTime  time.Time `json:"last_commit_time,omitzero"`
	// FirstGTID and LastGTID are those of the first and last completed transaction.
	FirstGTID string `json:"first_gtid,omitempty"`
	LastGTID  string `json:"last_gtid,omitempty"`
	// GTIDs are the GTIDs of the transactions whose GTID event lies in the
	// segment's bytes, one range per source (MariaDB domain, MySQL uuid or
	// uuid and tag) in order of first appearance. They let a reader judge
	// the archive's continuity by transaction, not only by byte position.
	GTIDs []GTIDRange `json:"gtids,omitempty"`
	// UnknownGTIDs counts the GTID events in the segment's bytes whose GTID
	// could not be read (a MySQL tagged GTID event in a form this version
	// does not know). Their bytes are archived as they are; their GTIDs are
	// in no range, and continuity across them is judged by position only.
	UnknownGTIDs int `json:"unknown_gtids,omitempty"`
	// TimelineUID is the UID of the timeline record the segment was written
	// under; a record whose UID differs from its timeline's comes from
	// another archive.
	TimelineUID string `json:"timeline_uid,omitempty"`
	// LastEvent locates the segment's last event and fingerprints its bytes,
	// so a resumed stream can prove it continues the same file.
	LastEvent EventRef `json:"last_event"`
	// SHA256 is the hex SHA-256 of the uncompressed bytes [Start, End).
	SHA256 string `json:"sha256"`
	// StoredSize is the size of the compressed data object.
	StoredSize int64 `json:"stored_size"`
	// ServerVersion is from the file's format description.
	ServerVersion string `json:"server_version,omitempty"`
	// ServerID and ServerUUID name the server the segment was streamed
	// from (unset before they were recorded).
	ServerID   uint32 `json:"server_id,omitempty"`
	ServerUUID string `json:"server_uuid,omitempty"`
	// ArchivedAt is when the segment was sealed by the agent.
	ArchivedAt time.Time `json:"archived_at"`
}

// EventRef locates an event and fingerprints its bytes.
type EventRef struct {
	Pos    uint64 `json:"pos"`
	Size   uint32 `json:"size"`
	CRC32C uint32 `json:"crc32c"`
}

// Ref returns the segment's location.
func (s *Segment) Ref() SegmentRef {
	return SegmentRef{Timeline: s.Timeline, FileNum: s.FileNum, Start: s.Start, End: s.End, Gen: s.Gen}
}

// Size is the number of archived binlog bytes.
func (s *Segment) Size() uint64 { return s.End - s.Start }

// Validate checks the record's internal consistency.
func (s *Segment) Validate() error {
	switch {
	case s.Timeline == 0:
		return fmt.Errorf("segment record: timeline is zero")
	case s.File == "":
		return fmt.Errorf("segment record: file is empty")
	case s.End <= s.Start || s.Start < 4:
		return fmt.Errorf("segment record %s: range [%d,%d) is invalid", s.File, s.Start, s.End)
	case s.TxnEnd != 0 && (s.TxnEnd <= s.Start || s.TxnEnd > s.End):
		return fmt.Errorf("segment record %s: txn_end %d outside [%d,%d)", s.File, s.TxnEnd, s.Start, s.End)
	case len(s.SHA256) != 64:
		return fmt.Errorf("segment record %s: sha256 %q is invalid", s.File, s.SHA256)
	}
	if n, err := FileNumber(s.File); err != nil || n != s.FileNum {
		return fmt.Errorf("segment record: file %q does not match file number %d", s.File, s.FileNum)
	}
	return nil
}

// TimelineReason says why a timeline began.
type TimelineReason string

// Reasons a timeline begins.
const (
	// ReasonFirst: the archive was empty.
	ReasonFirst TimelineReason = "first"
	// ReasonPurged: binlogs the archive needed were purged from the server
	// before they were archived; the history between is lost.
	ReasonPurged TimelineReason = "purged"
	// ReasonDiverged: the server's binlog no longer continues the archived
	// one (re-initialized, restored, RESET MASTER, a different server).
	ReasonDiverged TimelineReason = "diverged"
	// ReasonRestored: the server was restored by mysql-pitr to an earlier point.
	ReasonRestored TimelineReason = "restored"
	// ReasonUnverified: the agent could not read where the archive ended
	// (it is encrypted, the agent holds only the public recipients, and its
	// spool did not keep the archive's end), so it could not prove that the
	// server continues it.
	ReasonUnverified TimelineReason = "unverified"
	// ReasonFailover: another server became the primary, and it holds
	// every transaction archived on the timeline before (Continues): the
	// archive goes on from it without losing any. Not a gap.
	ReasonFailover TimelineReason = "failover"
)

// Timeline is the record that starts a timeline. A new timeline is the
// archive's gap marker: nothing connects its first byte to the previous
// timeline's last one, and no recovery window crosses from one to the next.
type Timeline struct {
	ID TimelineID `json:"id"`
	// Gen is the writer generation that stored the record (0: before
	// generations existed).
	Gen Generation `json:"gen,omitempty"`
	// UID is random and unique to this timeline of this archive: segments and
	// manifests carry it, so that objects copied in from another archive (whose
	// timelines have the same small numbers) are told apart.
	UID    string         `json:"uid,omitempty"`
	Reason TimelineReason `json:"reason"`
	// Detail is a human-readable account of the reason.
	Detail string `json:"detail,omitempty"`
	// Parent is the timeline before this one (zero for the first).
	Parent TimelineID `json:"parent,omitempty"`
	// ParentEnd is where the archive of the parent timeline ended when this one began.
	ParentEnd *Position `json:"parent_end,omitempty"`
	// Start is the first archived position of this timeline.
	Start Position `json:"start"`
	// Missing names binlog files that existed between ParentEnd and Start
	// and are lost, when known.
	Missing []string `json:"missing,omitempty"`
	// Server identity at the time the timeline began.
	Flavor        string `json:"flavor"`
	ServerVersion string `json:"server_version"`
	ServerID      uint32 `json:"server_id"`
	ServerUUID    string `json:"server_uuid,omitempty"`
	// GTIDState is the server's GTID state when the timeline began (MariaDB gtid_binlog_pos / MySQL gtid_executed).
	GTIDState string `json:"gtid_state,omitempty"`
	// Continues is set for ReasonFailover: the last GTID of each source
	// archived on the parent timeline, each of which the new server held.
	Continues []string `json:"continues,omitempty"`
	// RestoreID is set for ReasonRestored: the restore that produced the server's data.
	RestoreID string    `json:"restore_id,omitempty"`
	Created   time.Time `json:"created"`
	// Agent names the agent that began the timeline.
	Agent string `json:"agent,omitempty"`
}

// NewTimelineUID returns a random UID for a new timeline.
func NewTimelineUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PutJSON stores v as indented JSON under key; with create it never overwrites.
func PutJSON(ctx context.Context, st storage.Storage, key string, v any, create bool) error {
	_, err := putJSON(ctx, st, key, v, create)
	return err
}

func putJSON(ctx context.Context, st storage.Storage, key string, v any, create bool) (storage.ObjectInfo, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("encode %s: %w", key, err)
	}
	b = append(b, '\n')
	return st.Put(ctx, key, bytes.NewReader(b), storage.PutOptions{IfNotExists: create})
	// the store's errors name the key
}

// GetJSON reads the JSON object at key into v, verifying the object's checksum.
func GetJSON(ctx context.Context, st storage.Storage, key string, v any) error {
	rc, err := st.Open(ctx, key)
	if err != nil {
		return fmt.Errorf("open %s: %w", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// SnapshotPrefix is the prefix of every snapshot object:
//
//	snapshots/<id>/manifest.json    written last: a snapshot without it does not exist
//	snapshots/<id>/<object>         the snapshot's data objects, named by the method
const SnapshotPrefix = "snapshots/"

const manifestName = "manifest.json"

// SnapshotID names a snapshot; it sorts by start time: "20261127T031500Z-9f2c".
type SnapshotID string

// NewSnapshotID returns an id for a snapshot started at t.
func NewSnapshotID(t time.Time) SnapshotID {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return SnapshotID(t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]))
}

// ParseSnapshotID checks an id's form.
func ParseSnapshotID(s string) (SnapshotID, error) {
	ts, suffix, ok := strings.Cut(s, "-")
	if !ok || len(suffix) != 4 || !isHex(suffix) {
		return "", fmt.Errorf("%w: snapshot id %q", ErrBadKey, s)
	}
	if _, err := time.Parse("20060102T150405Z", ts); err != nil {
		return "", fmt.Errorf("%w: snapshot id %q", ErrBadKey, s)
	}
	return SnapshotID(s), nil
}

// Time returns when the snapshot started, from its id.
func (id SnapshotID) Time() time.Time {
	ts, _, _ := strings.Cut(string(id), "-")
	t, _ := time.Parse("20060102T150405Z", ts)
	return t
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// SnapshotPrefixOf is the prefix of a snapshot's objects.
func SnapshotPrefixOf(id SnapshotID) string { return SnapshotPrefix + string(id) + "/" }

// SnapshotObjectKey is the key of a snapshot's object name.
func SnapshotObjectKey(id SnapshotID, name string) string { return SnapshotPrefixOf(id) + name }

// ManifestKey is the key of a snapshot's manifest.
func ManifestKey(id SnapshotID) string { return SnapshotObjectKey(id, manifestName) }

// Snapshot methods.
const (
	MethodLogical  = "logical"
	MethodPhysical = "physical"
)

// Manifest describes a complete snapshot. It is written last, create-only.
type Manifest struct {
	ID     SnapshotID `json:"id"`
	Method string     `json:"method"`
	// Server identity.
	Flavor        string `json:"flavor"`
	ServerVersion string `json:"server_version"`
	ServerID      uint32 `json:"server_id"`
	ServerUUID    string `json:"server_uuid,omitempty"`
	// Binlog is the position the snapshot is consistent with: replaying the
	// binlog from here reproduces every later transaction.
	Binlog Position `json:"binlog"`
	// GTIDSet is the server's GTID state at that position (MariaDB
	// gtid_binlog_pos, MySQL gtid_executed).
	GTIDSet string `json:"gtid_set,omitempty"`
	// Timeline is the archive timeline that was being written when the
	// snapshot was taken (zero when unknown).
	Timeline TimelineID `json:"timeline,omitempty"`
	// TimelineUID is that timeline's UID (empty when unknown): a manifest
	// whose UID differs from the timeline it names belongs to another archive.
	TimelineUID string `json:"timeline_uid,omitempty"`
	// ConsistentAt is the server's clock (UTC) when the position was read,
	// with writes held: every transaction in the snapshot committed at or
	// before it, so the snapshot can serve any restore target at or after it.
	ConsistentAt time.Time `json:"consistent_at,omitzero"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	// WritesBlocked is how long the snapshot kept writes from committing.
	WritesBlocked time.Duration `json:"writes_blocked_ns"`
	// Tool names the external tool and version for physical snapshots.
	Tool string `json:"tool,omitempty"`
	// Objects are the snapshot's data objects, with sizes and checksums.
	Objects []SnapshotObject `json:"objects"`
	// Tables lists the tables with row counts (and digests when recorded).
	Tables []TableInfo `json:"tables,omitempty"`
	// Bytes is the uncompressed size of the data; StoredBytes what storage holds.
	Bytes       int64 `json:"bytes"`
	StoredBytes int64 `json:"stored_bytes"`
	// Agent names who took the snapshot.
	Agent string `json:"agent,omitempty"`
	// LowerCaseTableNames and InnoDBPageSize are the server's
	// lower_case_table_names and innodb_page_size, which a datadir keeps
	// for life: MySQL refuses to start on a datadir with others, so a
	// restore's temporary server, and the datadir it initialises, get the
	// same. Zero when not recorded: the server's defaults.
	LowerCaseTableNames int `json:"lower_case_table_names,omitempty"`
	InnoDBPageSize      int `json:"innodb_page_size,omitempty"`
}

// SnapshotObject is one data object of a snapshot.
type SnapshotObject struct {
	// Name is relative to the snapshot's prefix.
	Name string `json:"name"`
	// Size is the uncompressed size; StoredSize the object's size.
	Size       int64 `json:"size"`
	StoredSize int64 `json:"stored_size"`
	// SHA256 is of the uncompressed bytes.
	SHA256 string `json:"sha256"`
}

// TableInfo is one table in a snapshot.
type TableInfo struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Rows is the number of rows the snapshot holds, or, when RowsEstimated,
	// the server's estimate (information_schema.TABLES.TABLE_ROWS).
	Rows          int64 `json:"rows"`
	RowsEstimated bool  `json:"rows_estimated,omitempty"`
	// Digest fingerprints the rows a logical snapshot holds, as
	// "ALGORITHM:HEX". The only algorithm is "xxh64-sum"
	// (snapshot.DigestAlgorithm): the sum modulo 2^64 of the XXH64 hash of
	// each row's line in the snapshot's data format (newline included), so
	// it depends neither on row order nor on chunking, and
	// snapshot.DigestTables computes the same value over a live table. It
	// is empty for physical snapshots and for snapshots taken before it was
	// recorded; such tables are checked by row count only.
	//
	// (An unused "checksum" field, documented as CHECKSUM TABLE's value and
	// never written, came before it; manifests holding it still decode.)
	Digest string `json:"digest,omitempty"`
}

// Validate checks the manifest's required fields.
func (m *Manifest) Validate() error {
	switch {
	case m.ID == "":
		return errors.New("manifest: id is empty")
	case m.Method != MethodLogical && m.Method != MethodPhysical:
		return fmt.Errorf("manifest %s: unknown method %q", m.ID, m.Method)
	case m.Binlog.File == "" || m.Binlog.Pos < 4:
		return fmt.Errorf("manifest %s: binlog position %s is invalid", m.ID, m.Binlog)
	case m.Finished.Before(m.Started):
		return fmt.Errorf("manifest %s: finished before it started", m.ID)
	case m.LowerCaseTableNames < 0 || m.LowerCaseTableNames > 2:
		return fmt.Errorf("manifest %s: lower_case_table_names %d is not 0, 1 or 2", m.ID, m.LowerCaseTableNames)
	case m.InnoDBPageSize != 0 && (m.InnoDBPageSize < 4096 || m.InnoDBPageSize > 65536 || m.InnoDBPageSize&(m.InnoDBPageSize-1) != 0):
		return fmt.Errorf("manifest %s: innodb_page_size %d is not a power of two from 4096 to 65536", m.ID, m.InnoDBPageSize)
	}
	if _, err := ParseSnapshotID(string(m.ID)); err != nil {
		return err
	}
	return nil
}

// TimelineUIDOf returns the UID recorded for timeline id, or "" when the
// id is zero or its record cannot be read (not uploaded yet, or written
// before timelines had UIDs): a manifest then carries no UID, as before.
func TimelineUIDOf(ctx context.Context, st storage.Storage, id TimelineID) string {
	if id == 0 {
		return ""
	}
	key, err := TimelineRecordKeyOf(ctx, st, id)
	if err != nil || key == "" {
		return ""
	}
	var tl Timeline
	if err := GetJSON(ctx, st, key, &tl); err != nil {
		return ""
	}
	return tl.UID
}

// TimelineRecordKeyOf returns the key of timeline id's record, leaving out
// records of superseded writer generations; "" when it has none.
func TimelineRecordKeyOf(ctx context.Context, st storage.Storage, id TimelineID) (string, error) {
	gens, err := LoadGenerations(ctx, st)
	if err != nil {
		return "", err
	}
	objs, err := st.List(ctx, TimelinePrefix(id)+timelineStem)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", TimelinePrefix(id), err)
	}
	best, found := Generation(0), false
	for _, o := range objs {
		tl, gen, err := ParseTimelineRecordKey(o.Key)
		if err != nil || tl != id {
			continue
		}
		if _, _, sup := gens.Superseded(gen, TimelineStartPos(id)); sup {
			continue
		}
		if !found || gen < best {
			best, found = gen, true
		}
	}
	if !found {
		return "", nil
	}
	return TimelineRecordKey(id, best), nil
}

// WriteManifest stores the manifest, create-only: it is the snapshot's commit.
func WriteManifest(ctx context.Context, st storage.Storage, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	return PutJSON(ctx, st, ManifestKey(m.ID), m, true)
}

// Snapshots is what the archive holds of snapshots.
type Snapshots struct {
	// Complete are the snapshots with a valid manifest, oldest first.
	Complete []*Manifest
	// Partial are ids with objects but no manifest: unfinished or abandoned
	// snapshots, invisible to restores, to be collected.
	Partial []SnapshotID
	// Invalid are the manifests that cannot be used, and why: unreadable,
	// missing required fields, describing another snapshot than their key
	// names, or naming objects that are missing or of another size. Their
	// snapshots are left out of Complete; restores say they skipped them.
	Invalid []Issue
}

// Skipped returns the invalid manifests of snapshots that started after
// from (all of them for a zero from): what a restore that chose a snapshot
// started at from passed over.
func (s *Snapshots) Skipped(from time.Time) []Issue {
	var out []Issue
	for _, is := range s.Invalid {
		rest := strings.TrimPrefix(is.Key, SnapshotPrefix)
		idStr, _, _ := strings.Cut(rest, "/")
		if id, err := ParseSnapshotID(idStr); err == nil && id.Time().After(from) {
			out = append(out, is)
		}
	}
	return out
}

// LoadSnapshots lists the snapshots in storage and reads and checks every
// manifest. It fails only when storage cannot be listed or ctx ends; a
// manifest that cannot be used is reported in Invalid.
func LoadSnapshots(ctx context.Context, st storage.Storage) (*Snapshots, error) {
	objs, err := st.List(ctx, SnapshotPrefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", SnapshotPrefix, err)
	}
	seen := map[SnapshotID]bool{}
	sizes := map[string]int64{}
	var ids []SnapshotID
	for _, o := range objs {
		sizes[o.Key] = o.Size
		rest := strings.TrimPrefix(o.Key, SnapshotPrefix)
		idStr, name, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		id, err := ParseSnapshotID(idStr)
		if err != nil {
			continue
		}
		if _, done := seen[id]; !done {
			seen[id] = false
			ids = append(ids, id)
		}
		if name == manifestName {
			seen[id] = true
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	s := &Snapshots{}
	var undecryptable []error
	for _, id := range ids {
		if !seen[id] {
			s.Partial = append(s.Partial, id)
			continue
		}
		key := ManifestKey(id)
		var m Manifest
		err := GetJSON(ctx, st, key, &m)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		kind := kindOf(err)
		if errors.Is(err, crypt.ErrNoIdentity) {
			// Another archive's manifest, or this reader's keys are wrong:
			// the latter when no manifest can be read at all.
			undecryptable = append(undecryptable, err)
			kind = IssueForeign
		}
		if err == nil {
			kind = IssueBadRecord
			if err = m.Check(id); err == nil {
				kind, err = IssueMissing, m.checkStored(sizes)
			}
		}
		if err != nil {
			s.Invalid = append(s.Invalid, Issue{Key: key, Kind: kind, Detail: err.Error()})
			continue
		}
		s.Complete = append(s.Complete, &m)
	}
	if len(undecryptable) > 0 && len(undecryptable) == len(s.Invalid) && len(s.Complete) == 0 {
		return nil, undecryptable[0]
	}
	return s, nil
}

// Check validates a manifest read under snapshot id's key on its own: it
// must describe that snapshot, carry the required fields, and list well
// formed objects whose sizes add up to its totals.
func (m *Manifest) Check(id SnapshotID) error {
	if m.ID != id {
		if m.ID == "" {
			return fmt.Errorf("manifest of %s names no snapshot", id)
		}
		return fmt.Errorf("manifest under snapshot %s describes snapshot %s", id, m.ID)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if len(m.Objects) == 0 {
		return fmt.Errorf("manifest %s lists no data object", id)
	}
	var bytes, stored int64
	for _, o := range m.Objects {
		switch {
		case o.Name == "" || o.Name == manifestName || strings.Contains(o.Name, ".."):
			return fmt.Errorf("manifest %s lists an object named %q", id, o.Name)
		case len(o.SHA256) != 64:
			return fmt.Errorf("manifest %s records no valid SHA-256 for %s", id, o.Name)
		}
		bytes += o.Size
		stored += o.StoredSize
	}
	if (m.Bytes != 0 && m.Bytes != bytes) || (m.StoredBytes != 0 && m.StoredBytes != stored) {
		return fmt.Errorf("manifest %s totals %d bytes (%d stored), its objects %d (%d stored)", id, m.Bytes, m.StoredBytes, bytes, stored)
	}
	return nil
}

// checkStored checks that every object the manifest lists is in the
// listing (sizes by key) with the size it records.
func (m *Manifest) checkStored(sizes map[string]int64) error {
	for _, o := range m.Objects {
		key := SnapshotObjectKey(m.ID, o.Name)
		size, ok := sizes[key]
		switch {
		case !ok:
			return fmt.Errorf("manifest %s lists %s, which is missing", m.ID, key)
		case o.StoredSize > 0 && size != o.StoredSize:
			return fmt.Errorf("manifest %s records %d bytes for %s, which holds %d", m.ID, o.StoredSize, key, size)
		}
	}
	return nil
}

package catalog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ArchiveKey is the key of the record that makes a storage location an
// archive. The first writer stores it, create-only; readers check for it,
// so that a location holding nothing (a typo in a URL) is an error, not an
// empty archive.
const ArchiveKey = "archive.json"

// ErrNoArchive is returned by CheckArchive for a location that holds no
// archive.
var ErrNoArchive = errors.New("no mysql-pitr archive at this location")

// ArchiveRecord is the content of archive.json.
type ArchiveRecord struct {
	// UID is random and unique to the archive.
	UID     string    `json:"uid"`
	Created time.Time `json:"created"`
	// By names the command and agent that created it.
	By   string `json:"by,omitempty"`
	Host string `json:"host,omitempty"`
}

// EnsureArchive stores archive.json unless it is there: writers call it
// before they store anything else.
func EnsureArchive(ctx context.Context, st storage.Storage, by string) error {
	host, _ := os.Hostname()
	rec := ArchiveRecord{UID: NewTimelineUID(), Created: time.Now().UTC(), By: by, Host: host}
	err := PutJSON(ctx, st, ArchiveKey, &rec, true)
	if err == nil || errors.Is(err, storage.ErrExist) {
		return nil
	}
	return fmt.Errorf("record the archive: %w", err)
}

// archivePrefixes are where an archive written before archive.json existed
// keeps its objects.
var archivePrefixes = []string{LeaseKey, BinlogPrefix, SnapshotPrefix, GenerationPrefix}

// CheckArchive returns an error wrapping ErrNoArchive when st holds no
// archive: neither archive.json nor, for an archive older than it, any
// object of the archive's layout. It writes nothing.
func CheckArchive(ctx context.Context, st storage.Storage) error {
	_, err := st.Stat(ctx, ArchiveKey)
	if err == nil {
		return nil
	}
	if !errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("check for an archive: %w", err)
	}
	for _, p := range archivePrefixes {
		objs, err := st.List(ctx, p)
		if err != nil {
			return fmt.Errorf("check for an archive: %w", err)
		}
		for _, o := range objs {
			if o.Key == p || strings.HasSuffix(p, "/") {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: it holds no %s and none of the objects an archive is made of; check the storage URL", ErrNoArchive, ArchiveKey)
}

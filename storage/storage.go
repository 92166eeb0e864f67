// Package storage defines the object store that holds the archive: snapshots,
// binlog segments, their index records and manifests.
//
// The interface is deliberately small so that any object store can back it.
// Every backend runs the conformance suite in storage/storagetest.
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotExist is returned (wrapped) by Open, OpenRange, Stat when the key does not exist.
var ErrNotExist = errors.New("object does not exist")

// ErrExist is returned (wrapped) by Put with IfNotExists when the key already exists.
var ErrExist = errors.New("object already exists")

// ErrChecksum is returned (wrapped) by a reader from Open when the bytes read do
// not match the checksum recorded when the object was written.
var ErrChecksum = errors.New("object checksum mismatch")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key relative to the backend's root.
	Key string
	// Size is the object's length in bytes as stored: for a store that
	// transforms what it is given (storage/crypt encrypts it), the length
	// of the stored form, not of the bytes Put read.
	Size int64
	// ModTime is when the object was written, as the backend reports it.
	ModTime time.Time
	// CRC32C is the Castagnoli CRC-32 of the object's stored bytes, recorded at Put
	// and verified on read. Zero when the backend could not report it (List
	// may leave it unset; Put and Stat set it).
	CRC32C uint32
}

// PutOptions adjusts a Put.
type PutOptions struct {
	// IfNotExists makes the put fail with ErrExist when the key already
	// exists, atomically with respect to other writers where the backend
	// supports conditional writes.
	IfNotExists bool
}

// Storage is an object store. Keys are slash-separated paths without a
// leading slash, e.g. "binlog/0001/0000000003/000000000004-000000001234.zst",
// as ValidateKey defines them; every method given another key returns an
// error wrapping ErrInvalidKey. Implementations are safe for concurrent use.
type Storage interface {
	// Put stores everything read from r under key. It is all-or-nothing: no
	// reader ever sees a partly written object, and if Put returns an error
	// (including a cancelled context or an error from r) the key holds what
	// it held before. Put overwrites an existing object unless
	// opts.IfNotExists is set. It returns the stored object's info,
	// including its size and CRC32C.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (ObjectInfo, error)

	// Open returns a reader for the whole object. The reader verifies the
	// object's checksum as it reaches the end and returns an error wrapping
	// ErrChecksum from Read instead of io.EOF on mismatch, so a caller that
	// reads to EOF without error has read exactly the bytes that were put.
	// A missing key is an error wrapping ErrNotExist.
	Open(ctx context.Context, key string) (io.ReadCloser, error)

	// OpenRange returns a reader for length bytes starting at offset
	// (length < 0 means to the end); a range reaching past the end stops
	// there, and one starting at or past the end reads nothing. Ranged reads
	// cannot be checked against the whole object's checksum; callers that
	// need integrity read whole objects or check their own checksums. A
	// missing key is an error wrapping ErrNotExist.
	OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)

	// Stat returns the object's info; a missing key is an error wrapping ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List returns every object whose key starts with prefix (as
	// ValidatePrefix defines it), in ascending byte order of key. Objects
	// being written by an unfinished Put are never listed.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)

	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

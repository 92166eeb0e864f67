package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Memory is a storage.Storage held in memory, for unit tests of the packages
// built on storage. It keeps the whole contract, checksums included, and
// passes Run. The zero value is ready to use.
type Memory struct {
	mu      sync.Mutex
	objects map[string]memObject
}

var _ storage.Storage = (*Memory)(nil)

type memObject struct {
	data    []byte // never modified once stored: readers share it
	crc     uint32
	modTime time.Time
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{} }

// Put implements storage.Storage. It reads r whole before storing anything,
// so a failing reader or a cancelled context leaves the key untouched.
func (m *Memory) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put: %w", err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&ctxReader{ctx: ctx, r: r}); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	obj := memObject{data: buf.Bytes(), crc: storage.CRC32C(buf.Bytes()), modTime: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[key]; ok && opts.IfNotExists {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, storage.ErrExist)
	}
	if m.objects == nil {
		m.objects = make(map[string]memObject)
	}
	m.objects[key] = obj
	return obj.info(key), nil
}

func (o memObject) info(key string) storage.ObjectInfo {
	return storage.ObjectInfo{Key: key, Size: int64(len(o.data)), ModTime: o.modTime, CRC32C: o.crc}
}

func (m *Memory) get(ctx context.Context, key string) (memObject, error) {
	if err := storage.ValidateKey(key); err != nil {
		return memObject{}, err
	}
	if err := ctx.Err(); err != nil {
		return memObject{}, fmt.Errorf("%s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	obj, ok := m.objects[key]
	if !ok {
		return memObject{}, fmt.Errorf("%s: %w", key, storage.ErrNotExist)
	}
	return obj, nil
}

// Open implements storage.Storage.
func (m *Memory) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := m.get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	return storage.NewVerifyingReader(io.NopCloser(bytes.NewReader(obj.data)), key, obj.crc), nil
}

// OpenRange implements storage.Storage. An offset at or past the end reads
// nothing.
func (m *Memory) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("open %s: negative offset %d", key, offset)
	}
	obj, err := m.get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open %w", err)
	}
	data := obj.data[min(offset, int64(len(obj.data))):]
	if length >= 0 && length < int64(len(data)) {
		data = data[:length]
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Stat implements storage.Storage.
func (m *Memory) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	obj, err := m.get(ctx, key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %w", err)
	}
	return obj.info(key), nil
}

// List implements storage.Storage.
func (m *Memory) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	m.mu.Lock()
	var out []storage.ObjectInfo
	for key, obj := range m.objects {
		if strings.HasPrefix(key, prefix) {
			out = append(out, obj.info(key))
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements storage.Storage.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, key)
	return nil
}

// Corrupt flips one bit of the stored object under key, keeping its recorded
// checksum, as bit rot on a disk would. It reports whether the key held a
// non-empty object. It suits Options.Corrupt.
func (m *Memory) Corrupt(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	obj, ok := m.objects[key]
	if !ok || len(obj.data) == 0 {
		return false
	}
	// Readers may hold the old slice: corrupt a copy.
	data := slices.Clone(obj.data)
	data[len(data)/2] ^= 0x01
	obj.data = data
	m.objects[key] = obj
	return true
}

// ctxReader stops a copy once its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Package storagetest holds what tests of storage need: Run, the conformance
// suite that every backend's tests call; Memory, an in-memory Storage for
// unit tests of the packages above storage; and Faulty, a wrapper that
// injects errors and delays into any Storage.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// DefaultLargeSize is Options.LargeSize when it is zero.
const DefaultLargeSize = 1<<20 + 1

// Options adapts Run to a backend.
type Options struct {
	// LargeSize is the size of the largest object the suite puts. A backend
	// that changes strategy past some size, such as S3's multipart upload
	// past one part, sets it to cover several parts (e.g. 3×part size+1)
	// so that both strategies are tested. Zero means DefaultLargeSize.
	LargeSize int

	// Corrupt, when set, damages the stored bytes of key in s behind the
	// store's back (flips a byte, leaving any recorded checksum alone), as
	// bit rot would. The suite then expects reading the object to end in
	// storage.ErrChecksum. Nil skips that test.
	Corrupt func(t *testing.T, s storage.Storage, key string)

	// Transformed is set for a store that keeps objects in another form
	// than it was given (storage/crypt encrypts them): ObjectInfo.Size and
	// CRC32C then describe the stored form, so the suite checks that Put,
	// Stat and List agree with each other about them instead of comparing
	// them with the plaintext's length and checksum. Content is always
	// compared with what was put.
	Transformed bool
}

// Run runs the conformance suite: every behaviour promised by the
// storage.Storage documentation, each in a subtest on a fresh store from
// newStore. A store may share a backend with others, but must start empty.
func Run(t *testing.T, newStore func(t *testing.T) storage.Storage, opts Options) {
	if opts.LargeSize <= 0 {
		opts.LargeSize = DefaultLargeSize
	}
	c := &suite{newStore: newStore, opts: opts}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"RoundTrip", c.roundTrip},
		{"Overwrite", c.overwrite},
		{"IfNotExists", c.ifNotExists},
		{"ConcurrentIfNotExists", c.concurrentIfNotExists},
		{"ConcurrentPuts", c.concurrentPuts},
		{"FailingReader", c.failingReader},
		{"CancelledContext", c.cancelledContext},
		{"OpenRange", c.openRange},
		{"List", c.list},
		{"Delete", c.delete},
		{"Missing", c.missing},
		{"InvalidKeys", c.invalidKeys},
	}
	// Corruption needs a way to damage an object behind the store's back;
	// a wrapper without one (Faulty over Memory) leaves it to its backend.
	if opts.Corrupt != nil {
		tests = append(tests, struct {
			name string
			run  func(t *testing.T)
		}{"Corruption", c.corruption})
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

type suite struct {
	newStore func(t *testing.T) storage.Storage
	opts     Options
}

// payload returns n bytes that differ for each seed, so that one object's
// bytes cannot pass for another's.
func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sizes are the object sizes that RoundTrip and friends cover.
func (c *suite) sizes() []struct {
	name string
	size int
} {
	return []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one-byte", 1},
		{"small", 1000},
		{"large", c.opts.LargeSize},
	}
}

func mustPut(t *testing.T, s storage.Storage, key string, data []byte, opts storage.PutOptions) storage.ObjectInfo {
	t.Helper()
	info, err := s.Put(t.Context(), key, bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", key, len(data), err)
	}
	return info
}

func readAll(ctx context.Context, s storage.Storage, key string) ([]byte, error) {
	rc, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func mustRead(t *testing.T, s storage.Storage, key string) []byte {
	t.Helper()
	b, err := readAll(t.Context(), s, key)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b
}

func checkContent(t *testing.T, s storage.Storage, key string, want []byte) {
	t.Helper()
	got := mustRead(t, s, key)
	if !bytes.Equal(got, want) {
		t.Fatalf("content of %q: got %d bytes (crc32c %08x), want %d bytes (crc32c %08x)",
			key, len(got), storage.CRC32C(got), len(want), storage.CRC32C(want))
	}
}

// checkAbsent asserts that key is neither statable, openable nor listed.
func checkAbsent(t *testing.T, s storage.Storage, key string) {
	t.Helper()
	if info, err := s.Stat(t.Context(), key); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat(%q) = %+v, %v; want ErrNotExist", key, info, err)
	}
	if rc, err := s.Open(t.Context(), key); !errors.Is(err, storage.ErrNotExist) {
		if err == nil {
			rc.Close()
		}
		t.Errorf("Open(%q) error = %v; want ErrNotExist", key, err)
	}
	list, err := s.List(t.Context(), "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, o := range list {
		if o.Key == key {
			t.Errorf("List shows %q (%d bytes), which should not exist", key, o.Size)
		}
	}
}

// checkInfo checks an ObjectInfo against the data put under key. A
// transformed store's info is checked against want, the info Put returned,
// when given (and only for its key otherwise).
func (c *suite) checkInfo(t *testing.T, what string, got storage.ObjectInfo, key string, data []byte, want *storage.ObjectInfo) {
	t.Helper()
	if c.opts.Transformed {
		switch {
		case got.Key != key:
			t.Errorf("%s: key %q, want %q", what, got.Key, key)
		case want != nil && (got.Size != want.Size || got.CRC32C != want.CRC32C):
			t.Errorf("%s = {Size:%d CRC32C:%08x}, Put returned {Size:%d CRC32C:%08x}", what, got.Size, got.CRC32C, want.Size, want.CRC32C)
		case got.Size < int64(len(data)):
			t.Errorf("%s: stored size %d is smaller than the %d bytes put", what, got.Size, len(data))
		}
	} else if got.Key != key || got.Size != int64(len(data)) || got.CRC32C != storage.CRC32C(data) {
		t.Errorf("%s = {Key:%q Size:%d CRC32C:%08x}, want {Key:%q Size:%d CRC32C:%08x}",
			what, got.Key, got.Size, got.CRC32C, key, len(data), storage.CRC32C(data))
	}
	// Clocks of a remote store may be off a little, never by this much.
	if d := time.Since(got.ModTime); d < -5*time.Minute || d > 5*time.Minute {
		t.Errorf("%s ModTime = %v, not about now", what, got.ModTime)
	}
}

func (c *suite) roundTrip(t *testing.T) {
	for i, sz := range c.sizes() {
		t.Run(sz.name, func(t *testing.T) {
			s := c.newStore(t)
			key := "round/trip/" + sz.name
			data := payload(uint64(i), sz.size)
			info := mustPut(t, s, key, data, storage.PutOptions{})
			c.checkInfo(t, "Put info", info, key, data, nil)
			checkContent(t, s, key, data)
			st, err := s.Stat(t.Context(), key)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			c.checkInfo(t, "Stat", st, key, data, &info)
		})
	}
}

// wantSize is the size List should report for an object of n bytes whose
// Put returned info.
func (c *suite) wantSize(n int, info storage.ObjectInfo) int64 {
	if c.opts.Transformed {
		return info.Size
	}
	return int64(n)
}

func (c *suite) overwrite(t *testing.T) {
	s := c.newStore(t)
	key := "over/write"
	v1, v2 := payload(1, 5000), payload(2, 1000) // shorter, so a stale tail would show
	mustPut(t, s, key, v1, storage.PutOptions{})
	info := mustPut(t, s, key, v2, storage.PutOptions{})
	c.checkInfo(t, "Put info", info, key, v2, nil)
	checkContent(t, s, key, v2)
	st, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	c.checkInfo(t, "Stat", st, key, v2, &info)
}

func (c *suite) ifNotExists(t *testing.T) {
	for i, sz := range c.sizes()[2:] {
		t.Run(sz.name, func(t *testing.T) {
			s := c.newStore(t)
			key := "if/not/exists"
			v1, v2 := payload(uint64(10+i), sz.size), payload(uint64(20+i), sz.size)
			mustPut(t, s, key, v1, storage.PutOptions{IfNotExists: true})
			_, err := s.Put(t.Context(), key, bytes.NewReader(v2), storage.PutOptions{IfNotExists: true})
			if !errors.Is(err, storage.ErrExist) {
				t.Fatalf("second Put with IfNotExists: error = %v, want ErrExist", err)
			}
			checkContent(t, s, key, v1)
			// Once deleted, the key is free again.
			if err := s.Delete(t.Context(), key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			mustPut(t, s, key, v2, storage.PutOptions{IfNotExists: true})
			checkContent(t, s, key, v2)
		})
	}
}

func (c *suite) concurrentIfNotExists(t *testing.T) {
	s := c.newStore(t)
	const writers = 8
	key := "race/key"
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
		errs    []error
	)
	for w := range writers {
		wg.Go(func() {
			_, err := s.Put(t.Context(), key, bytes.NewReader(payload(uint64(100+w), 4096)), storage.PutOptions{IfNotExists: true})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, w)
			case !errors.Is(err, storage.ErrExist):
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("losing Put: error = %v, want ErrExist", err)
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent IfNotExists puts succeeded (%v), want exactly 1", len(winners), writers, winners)
	}
	checkContent(t, s, key, payload(uint64(100+winners[0]), 4096))
}

func (c *suite) concurrentPuts(t *testing.T) {
	s := c.newStore(t)
	const n = 16
	var wg sync.WaitGroup
	sizes := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("many/%02d/obj", i)
			info, err := s.Put(t.Context(), key, bytes.NewReader(payload(uint64(i), 2000+i)), storage.PutOptions{})
			if err != nil {
				t.Errorf("Put(%q): %v", key, err)
			}
			sizes[i] = c.wantSize(2000+i, info)
		})
	}
	wg.Wait()
	list, err := s.List(t.Context(), "many/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != n {
		t.Fatalf("List after %d concurrent puts: %d objects", n, len(list))
	}
	for i, o := range list {
		if want := fmt.Sprintf("many/%02d/obj", i); o.Key != want || o.Size != sizes[i] {
			t.Errorf("List[%d] = %q, %d bytes; want %q, %d bytes", i, o.Key, o.Size, want, sizes[i])
		}
	}
}

// errSource is the failure of the readers handed to Put by FailingReader.
var errSource = errors.New("source broke")

// failAfter yields data, then fails with errSource instead of io.EOF.
func failAfter(data []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(data), iotestErr{errSource})
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func (c *suite) failingReader(t *testing.T) {
	for _, existing := range []bool{false, true} {
		for i, sz := range c.sizes()[1:] {
			name := sz.name + "/new"
			if existing {
				name = sz.name + "/existing"
			}
			t.Run(name, func(t *testing.T) {
				s := c.newStore(t)
				key := "fail/obj"
				old := payload(uint64(30+i), 777)
				if existing {
					mustPut(t, s, key, old, storage.PutOptions{})
				}
				// Fail past the middle: for a large object that is after
				// whole parts have been sent.
				data := payload(uint64(40+i), sz.size)
				_, err := s.Put(t.Context(), key, failAfter(data[:len(data)/2+1]), storage.PutOptions{})
				if !errors.Is(err, errSource) {
					t.Fatalf("Put from a failing reader: error = %v, want one wrapping the reader's", err)
				}
				if existing {
					checkContent(t, s, key, old)
				} else {
					checkAbsent(t, s, key)
				}
			})
		}
	}
}

// cancelAfter yields head, cancels, then yields tail: the Put sees its
// context end while data is still coming.
type cancelAfter struct {
	head, tail io.Reader
	cancel     context.CancelFunc
	cancelled  bool
}

func (r *cancelAfter) Read(p []byte) (int, error) {
	n, err := r.head.Read(p)
	if err != io.EOF {
		return n, err
	}
	if !r.cancelled {
		r.cancel()
		r.cancelled = true
	}
	return r.tail.Read(p)
}

func (c *suite) cancelledContext(t *testing.T) {
	t.Run("before", func(t *testing.T) {
		s := c.newStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.Put(ctx, "cancel/before", bytes.NewReader(payload(50, 1000)), storage.PutOptions{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with a cancelled context: error = %v, want context.Canceled", err)
		}
		checkAbsent(t, s, "cancel/before")
	})
	for i, sz := range c.sizes()[2:] {
		t.Run("during/"+sz.name, func(t *testing.T) {
			s := c.newStore(t)
			key := "cancel/during"
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			data := payload(uint64(60+i), sz.size)
			half := len(data)/2 + 1
			r := &cancelAfter{head: bytes.NewReader(data[:half]), tail: bytes.NewReader(data[half:]), cancel: cancel}
			_, err := s.Put(ctx, key, r, storage.PutOptions{})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Put whose context ends mid-stream: error = %v, want context.Canceled", err)
			}
			checkAbsent(t, s, key)
		})
	}
}

func (c *suite) openRange(t *testing.T) {
	s := c.newStore(t)
	key := "range/obj"
	data := payload(70, 1000)
	mustPut(t, s, key, data, storage.PutOptions{})
	empty := "range/empty"
	mustPut(t, s, empty, nil, storage.PutOptions{})
	tests := []struct {
		name           string
		key            string
		offset, length int64
		want           []byte
	}{
		{"head", key, 0, 10, data[:10]},
		{"middle", key, 500, 1, data[500:501]},
		{"to-end", key, 10, -1, data[10:]},
		{"whole", key, 0, -1, data},
		{"past-end", key, 990, 100, data[990:]},
		{"zero-length", key, 5, 0, nil},
		{"at-end", key, 1000, -1, nil},
		{"beyond-end", key, 2000, 5, nil},
		{"empty-object", empty, 0, -1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := s.OpenRange(t.Context(), tt.key, tt.offset, tt.length)
			if err != nil {
				t.Fatalf("OpenRange(%d, %d): %v", tt.offset, tt.length, err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatalf("read range: %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("OpenRange(%d, %d) read %d bytes, want %d", tt.offset, tt.length, len(got), len(tt.want))
			}
		})
	}
}

func (c *suite) list(t *testing.T) {
	s := c.newStore(t)
	// "a-x" sorts before "a/b" bytewise ('-' < '/') but after the directory
	// "a" in a directory walk; "ab" after "a/c/d".
	keys := []string{"ab", "a/c/d", "b", "a/b0", "a-x", "a/b"}
	sizes := make([]int64, len(keys))
	for i, k := range keys {
		sizes[i] = c.wantSize(10+i, mustPut(t, s, k, payload(uint64(80+i), 10+i), storage.PutOptions{}))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-x", "a/b", "a/b0", "a/c/d", "ab", "b"}},
		{"a", []string{"a-x", "a/b", "a/b0", "a/c/d", "ab"}},
		{"a/", []string{"a/b", "a/b0", "a/c/d"}},
		{"a/b", []string{"a/b", "a/b0"}},
		{"a/b/", nil},
		{"a/c/", []string{"a/c/d"}},
		{"a/c/d", []string{"a/c/d"}},
		{"b", []string{"b"}},
		{"zz", nil},
		{"zz/", nil},
	}
	for _, tt := range tests {
		t.Run("prefix="+tt.prefix, func(t *testing.T) {
			list, err := s.List(t.Context(), tt.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tt.prefix, err)
			}
			var got []string
			for _, o := range list {
				got = append(got, o.Key)
				i := slices.Index(keys, o.Key)
				if i >= 0 && o.Size != sizes[i] {
					t.Errorf("List(%q): %q has size %d, want %d", tt.prefix, o.Key, o.Size, sizes[i])
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
			}
		})
	}
}

func (c *suite) delete(t *testing.T) {
	s := c.newStore(t)
	ctx := t.Context()
	mustPut(t, s, "del/x/1", payload(90, 100), storage.PutOptions{})
	mustPut(t, s, "del/x/2", payload(91, 100), storage.PutOptions{})
	if err := s.Delete(ctx, "del/x/1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkAbsent(t, s, "del/x/1")
	checkContent(t, s, "del/x/2", payload(91, 100))
	if err := s.Delete(ctx, "del/x/1"); err != nil {
		t.Errorf("Delete of a deleted key: %v, want nil", err)
	}
	if err := s.Delete(ctx, "del/never/was"); err != nil {
		t.Errorf("Delete of a key never put: %v, want nil", err)
	}
	if err := s.Delete(ctx, "del/x/2"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if list, err := s.List(ctx, "del/"); err != nil || len(list) != 0 {
		t.Fatalf("List after deleting all = %v, %v; want empty", list, err)
	}
	// The emptied "directory" takes new keys.
	mustPut(t, s, "del/x/3", payload(92, 100), storage.PutOptions{})
	checkContent(t, s, "del/x/3", payload(92, 100))
}

func (c *suite) missing(t *testing.T) {
	s := c.newStore(t)
	ctx := t.Context()
	mustPut(t, s, "here/obj", payload(95, 10), storage.PutOptions{})
	for _, key := range []string{"missing/key", "here/obj2", "here"} {
		if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q): error = %v, want ErrNotExist", key, err)
		}
		if rc, err := s.Open(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Open(%q): error = %v, want ErrNotExist", key, err)
		}
		if rc, err := s.OpenRange(ctx, key, 0, 5); !errors.Is(err, storage.ErrNotExist) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("OpenRange(%q): error = %v, want ErrNotExist", key, err)
		}
		if rc, err := s.OpenRange(ctx, key, 0, 0); !errors.Is(err, storage.ErrNotExist) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("OpenRange(%q, 0, 0): error = %v, want ErrNotExist", key, err)
		}
	}
}

func (c *suite) invalidKeys(t *testing.T) {
	s := c.newStore(t)
	ctx := t.Context()
	for _, key := range []string{"", "/abs", "a/../b", "..", "./a", "a//b", "a/", "a\\b", "a\x00b"} {
		t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
			if _, err := s.Put(ctx, key, bytes.NewReader([]byte("x")), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Put: error = %v, want ErrInvalidKey", err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Stat: error = %v, want ErrInvalidKey", err)
			}
			if rc, err := s.Open(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
				if err == nil {
					rc.Close()
				}
				t.Errorf("Open: error = %v, want ErrInvalidKey", err)
			}
			if err := s.Delete(ctx, key); !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Delete: error = %v, want ErrInvalidKey", err)
			}
		})
	}
	for _, prefix := range []string{"/abs", "../", "a/../", "a//", "a\\b"} {
		if _, err := s.List(ctx, prefix); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("List(%q): error = %v, want ErrInvalidKey", prefix, err)
		}
	}
}

func (c *suite) corruption(t *testing.T) {
	for i, sz := range c.sizes()[1:] {
		t.Run(sz.name, func(t *testing.T) {
			s := c.newStore(t)
			key := "rot/obj"
			data := payload(uint64(110+i), sz.size)
			mustPut(t, s, key, data, storage.PutOptions{})
			c.opts.Corrupt(t, s, key)
			got, err := readAll(t.Context(), s, key)
			if !errors.Is(err, storage.ErrChecksum) {
				t.Fatalf("reading a corrupted object: %d bytes, error = %v; want ErrChecksum", len(got), err)
			}
		})
	}
}

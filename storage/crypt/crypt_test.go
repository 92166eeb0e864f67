package crypt

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

func newIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatalf("generate identity: %v", err)
	}
	return id
}

// keyed returns a Storage over inner that encrypts for id and decrypts with ids.
func keyed(t *testing.T, inner storage.Storage, to *age.X25519Identity, ids ...*age.X25519Identity) *Storage {
	t.Helper()
	var opts Options
	if to != nil {
		opts.Recipients = []age.Recipient{to.Recipient()}
	}
	for _, id := range ids {
		opts.Identities = append(opts.Identities, id)
	}
	s, err := New(inner, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestConformanceMemory(t *testing.T) {
	id := newIdentity(t)
	storagetest.Run(t, func(t *testing.T) storage.Storage { return keyed(t, storagetest.NewMemory(), id, id) }, storagetest.Options{
		Transformed: true,
		// Several age chunks, so that chunking and the last chunk are covered.
		LargeSize: 3*64<<10 + 1,
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			if !s.(*Storage).Inner().(*storagetest.Memory).Corrupt(key) {
				t.Fatalf("corrupt %q: no such object", key)
			}
		},
	})
}

func TestConformanceFile(t *testing.T) {
	id := newIdentity(t)
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		fs, err := file.New(t.TempDir())
		if err != nil {
			t.Fatalf("file.New: %v", err)
		}
		return keyed(t, fs, id, id)
	}, storagetest.Options{
		Transformed: true,
		LargeSize:   3*64<<10 + 1,
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			root := s.(*Storage).Inner().(*file.Store).Root()
			flipFileByte(t, filepath.Join(root, filepath.FromSlash(key)))
		},
	})
}

// TestConformanceDetectOnly runs the suite over a Storage without keys: a
// pass-through for plaintext archives.
func TestConformanceDetectOnly(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage { return keyed(t, storagetest.NewMemory(), nil) }, storagetest.Options{
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			if !s.(*Storage).Inner().(*storagetest.Memory).Corrupt(key) {
				t.Fatalf("corrupt %q: no such object", key)
			}
		},
	})
}

// flipFileByte damages a file of the file store in place, keeping its
// checksum attribute, as bit rot would.
func flipFileByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		t.Fatalf("corrupt %s: %v", path, err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	b[0] ^= 0x80
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
}

// stored returns the raw bytes under key in the inner store.
func stored(t *testing.T, m *storagetest.Memory, key string) []byte {
	t.Helper()
	rc, err := m.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("open raw %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read raw %s: %v", key, err)
	}
	return b
}

// replace writes raw bytes under key in the inner store, as someone with
// write access to the bucket could: the store's own checksum then matches.
func replace(t *testing.T, m *storagetest.Memory, key string, b []byte) {
	t.Helper()
	if _, err := m.Put(t.Context(), key, bytes.NewReader(b), storage.PutOptions{}); err != nil {
		t.Fatalf("put raw %s: %v", key, err)
	}
}

// layout locates the parts of an age file: where the payload (after the
// header and the 16-byte nonce) starts and where each chunk starts.
type layout struct {
	macLine int // offset of the header's "--- " line
	payload int
	chunks  []int
}

func parseLayout(t *testing.T, b []byte) layout {
	t.Helper()
	i := bytes.Index(b, []byte("\n--- "))
	if i < 0 {
		t.Fatal("no header MAC line in the stored object")
	}
	end := bytes.IndexByte(b[i+1:], '\n')
	l := layout{macLine: i + 1, payload: i + 1 + end + 1 + 16}
	for off := l.payload; off < len(b); off += 64<<10 + 16 {
		l.chunks = append(l.chunks, off)
	}
	return l
}

func readAll(s storage.Storage, t *testing.T, key string) ([]byte, error) {
	rc, err := s.Open(t.Context(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func TestTampering(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	const key = "binlog/0001/0000000003/000000000004-000000300000.zst"
	const other = "binlog/0001/0000000003/000000300000-000000600000.zst"
	plain := data(1, 3*64<<10+500) // four chunks, the last one short
	tests := []struct {
		name string
		// damage changes the stored object (raw) of key; inner holds other too.
		damage func(t *testing.T, raw []byte, l layout, m *storagetest.Memory) []byte
		// reader is the Storage that reads key.
		reader func(m *storagetest.Memory) *Storage
		// want are the sentinels the error wraps; msg a substring of it.
		want []error
		msg  string
	}{
		{"flipped byte in header MAC", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			raw[l.macLine+6] ^= 0x01
			return raw
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"flipped byte in first chunk (object header)", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			raw[l.chunks[0]+3] ^= 0x01
			return raw
		}, nil, []error{ErrTampered, storage.ErrChecksum}, "tampered"},
		{"flipped byte in body", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			raw[l.chunks[1]+1000] ^= 0x01
			return raw
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"flipped byte in last chunk", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			raw[len(raw)-20] ^= 0x01
			return raw
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"truncated by one byte", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			return raw[:len(raw)-1]
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"truncated at a chunk boundary", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			return raw[:l.chunks[len(l.chunks)-1]]
		}, nil, []error{ErrTampered, storage.ErrChecksum}, "truncated"},
		{"chunks reordered", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			c1 := bytes.Clone(raw[l.chunks[1]:l.chunks[2]])
			copy(raw[l.chunks[1]:], raw[l.chunks[2]:l.chunks[3]])
			copy(raw[l.chunks[2]:], c1)
			return raw
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"trailing data appended", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			return append(raw, 0)
		}, nil, []error{ErrTampered, storage.ErrChecksum}, key},
		{"swapped with another key's ciphertext", func(t *testing.T, raw []byte, l layout, m *storagetest.Memory) []byte {
			return stored(t, m, other)
		}, nil, []error{ErrTampered, storage.ErrChecksum}, "moved or swapped"},
		{"plaintext object where encryption is configured", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			return bytes.Clone(plain)
		}, nil, []error{ErrNotEncrypted}, key + ": object is not encrypted"},
		{"empty plaintext object where encryption is configured", func(t *testing.T, raw []byte, l layout, _ *storagetest.Memory) []byte {
			return nil
		}, nil, []error{ErrNotEncrypted}, key},
		{"wrong identity", nil, func(m *storagetest.Memory) *Storage { return keyed(t, m, nil, b) },
			[]error{ErrNoIdentity}, "no configured age identity can decrypt " + key + "; it was encrypted for other recipients"},
		{"no identity", nil, func(m *storagetest.Memory) *Storage { return keyed(t, m, a) },
			[]error{ErrNoIdentity}, key + ": no age identity can decrypt the object: it is encrypted with age and no age identity is configured"},
		{"no keys at all", nil, func(m *storagetest.Memory) *Storage { return keyed(t, m, nil) },
			[]error{ErrNoIdentity}, "no age identity is configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := storagetest.NewMemory()
			w := keyed(t, m, a)
			if _, err := w.Put(t.Context(), key, bytes.NewReader(plain), storage.PutOptions{}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if _, err := w.Put(t.Context(), other, bytes.NewReader(data(2, len(plain))), storage.PutOptions{}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if tt.damage != nil {
				raw := stored(t, m, key)
				replace(t, m, key, tt.damage(t, raw, parseLayout(t, raw), m))
			}
			r := keyed(t, m, nil, a)
			if tt.reader != nil {
				r = tt.reader(m)
			}
			got, err := readAll(r, t, key)
			if err == nil {
				t.Fatalf("read %d bytes without error; want a refusal", len(got))
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("error %q does not wrap %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			// Whatever was handed out before the error is a prefix of the
			// plaintext: nothing unauthenticated.
			if !bytes.HasPrefix(plain, got) {
				t.Errorf("read %d bytes that are not the object's plaintext", len(got))
			}
			// Ranged reads refuse the object too.
			if rc, rerr := r.OpenRange(t.Context(), key, 0, -1); rerr == nil {
				b, rerr := io.ReadAll(rc)
				rc.Close()
				if rerr == nil {
					t.Errorf("OpenRange read %d bytes without error", len(b))
				}
			}
		})
	}
}

// TestTamperedHeaderStanza flips a byte of the recipient stanza: no identity
// can unwrap the file key any more, which age cannot tell from a wrong key.
// TestPlaintextDamage reads damaged objects of an unencrypted archive
// through a Storage without keys: whatever the object's size, the error is
// the store's checksum mismatch, and it says nothing of encryption.
func TestPlaintextDamage(t *testing.T) {
	const key = "snapshots/20261127T031500Z-9f2c/tables/app/t/data-000001.tsv.zst"
	for _, tt := range []struct {
		name string
		size int
	}{
		{"shorter than the age header", 9},
		{"a few hundred bytes", 300},
		{"several age chunks long", 3*64<<10 + 500},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := storagetest.NewMemory()
			s := keyed(t, m, nil)
			if _, err := s.Put(t.Context(), key, bytes.NewReader(data(3, tt.size)), storage.PutOptions{}); err != nil {
				t.Fatalf("Put: %v", err)
			}
			if !m.Corrupt(key) {
				t.Fatal("nothing to corrupt")
			}
			_, err := readAll(s, t, key)
			if !errors.Is(err, storage.ErrChecksum) || errors.Is(err, ErrTampered) || strings.Contains(err.Error(), "encrypt") {
				t.Errorf("error %v; want the store's checksum mismatch, not a word of encryption", err)
			}
		})
	}
}

func TestTamperedHeaderStanza(t *testing.T) {
	a := newIdentity(t)
	m := storagetest.NewMemory()
	const key = "snapshots/20261127T031500Z-9f2c/manifest.json"
	if _, err := keyed(t, m, a).Put(t.Context(), key, strings.NewReader(`{"id":"x"}`), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	raw := stored(t, m, key)
	l := parseLayout(t, raw)
	raw[l.macLine-10] ^= 0x01 // inside the stanza's body line
	replace(t, m, key, raw)
	got, err := readAll(keyed(t, m, nil, a), t, key)
	if err == nil || len(got) != 0 {
		t.Fatalf("read %d bytes, error %v; want a refusal before any byte", len(got), err)
	}
	if !errors.Is(err, ErrNoIdentity) && !errors.Is(err, ErrTampered) {
		t.Errorf("error %q wraps neither ErrNoIdentity nor ErrTampered", err)
	}
}

func TestRotation(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	m := storagetest.NewMemory()
	old, newer := "binlog/0001/timeline.json", "binlog/0002/timeline.json"
	if _, err := keyed(t, m, a).Put(t.Context(), old, strings.NewReader("old"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if _, err := keyed(t, m, b).Put(t.Context(), newer, strings.NewReader("new"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	both := keyed(t, m, nil, b, a)
	for key, want := range map[string]string{old: "old", newer: "new"} {
		got, err := readAll(both, t, key)
		if err != nil || string(got) != want {
			t.Errorf("with identities {A,B}: %s = %q, %v; want %q", key, got, err, want)
		}
	}
	onlyB := keyed(t, m, nil, b)
	if got, err := readAll(onlyB, t, newer); err != nil || string(got) != "new" {
		t.Errorf("with identity B: %s = %q, %v", newer, got, err)
	}
	_, err := readAll(onlyB, t, old)
	if !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), "no configured age identity can decrypt "+old+"; it was encrypted for other recipients") {
		t.Errorf("with identity B only, reading %s: error %v; want the clear no-identity error", old, err)
	}
}

func TestSeveralRecipients(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	m := storagetest.NewMemory()
	w, err := New(m, Options{Recipients: []age.Recipient{a.Recipient(), b.Recipient()}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := w.Put(t.Context(), "k", strings.NewReader("both"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for name, id := range map[string]*age.X25519Identity{"A": a, "B": b} {
		if got, err := readAll(keyed(t, m, nil, id), t, "k"); err != nil || string(got) != "both" {
			t.Errorf("identity %s: %q, %v", name, got, err)
		}
	}
}

func TestOpenRangeAcrossChunks(t *testing.T) {
	a := newIdentity(t)
	m := storagetest.NewMemory()
	s := keyed(t, m, a, a)
	plain := data(3, 5*64<<10+123)
	const key = "snapshots/x/data.zst"
	if _, err := s.Put(t.Context(), key, bytes.NewReader(plain), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	n := int64(len(plain))
	tests := []struct{ offset, length int64 }{
		{0, 10}, {64<<10 - 5, 10}, {64 << 10, 64 << 10}, {100000, 200000}, {n - 1, 1}, {n - 10, -1}, {0, -1}, {n, 5}, {n + 100, -1}, {3, 0},
	}
	for _, tt := range tests {
		rc, err := s.OpenRange(t.Context(), key, tt.offset, tt.length)
		if err != nil {
			t.Fatalf("OpenRange(%d, %d): %v", tt.offset, tt.length, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("OpenRange(%d, %d): read: %v", tt.offset, tt.length, err)
		}
		start := min(tt.offset, n)
		end := n
		if tt.length >= 0 {
			end = min(start+tt.length, n)
		}
		if !bytes.Equal(got, plain[start:end]) {
			t.Errorf("OpenRange(%d, %d): %d bytes, want plaintext[%d:%d]", tt.offset, tt.length, len(got), start, end)
		}
	}
	// A damaged chunk inside the range is refused.
	raw := stored(t, m, key)
	l := parseLayout(t, raw)
	raw[l.chunks[2]+7] ^= 0x01
	replace(t, m, key, raw)
	rc, err := s.OpenRange(t.Context(), key, 2*64<<10, 100)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if !errors.Is(err, ErrTampered) || !errors.Is(err, storage.ErrChecksum) {
		t.Errorf("ranged read of a damaged chunk: error %v, want ErrTampered and ErrChecksum", err)
	}
	// A range before the damage still reads: each chunk stands alone.
	rc, err = s.OpenRange(t.Context(), key, 0, 100)
	if err != nil {
		t.Fatalf("OpenRange before the damage: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, plain[:100]) {
		t.Errorf("ranged read before the damage: %d bytes, %v", len(got), err)
	}
}

func TestIsEncrypted(t *testing.T) {
	a := newIdentity(t)
	m := storagetest.NewMemory()
	if _, err := keyed(t, m, a).Put(t.Context(), "enc", strings.NewReader("x"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(t.Context(), "plain", strings.NewReader(`{"a":1}`), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(t.Context(), "empty", strings.NewReader(""), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"enc": true, "plain": false, "empty": false} {
		got, err := IsEncrypted(t.Context(), keyed(t, m, a), key)
		if err != nil || got != want {
			t.Errorf("IsEncrypted(%s) = %v, %v; want %v", key, got, err, want)
		}
	}
	if _, err := IsEncrypted(t.Context(), m, "missing"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("IsEncrypted(missing): %v, want ErrNotExist", err)
	}
}

// TestWriterWithoutIdentity: a writer given only recipients writes, and can
// still read plaintext objects, but no encrypted one.
func TestWriterWithoutIdentity(t *testing.T) {
	a := newIdentity(t)
	m := storagetest.NewMemory()
	w := keyed(t, m, a)
	if !w.Encrypts() || w.Decrypts() {
		t.Fatalf("Encrypts, Decrypts = %v, %v; want true, false", w.Encrypts(), w.Decrypts())
	}
	if _, err := w.Put(t.Context(), "k", strings.NewReader("secret"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if raw := stored(t, m, "k"); bytes.Contains(raw, []byte("secret")) || !bytes.HasPrefix(raw, []byte(ageMagic)) {
		t.Errorf("stored object is not an age file hiding its content: %q", raw[:min(len(raw), 40)])
	}
	if _, err := readAll(w, t, "k"); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("writer reading: %v, want ErrNoIdentity", err)
	}
}

func TestBadRecipients(t *testing.T) {
	pq, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(storagetest.NewMemory(), Options{Recipients: []age.Recipient{newIdentity(t).Recipient(), pq.Recipient()}})
	if err == nil || !strings.Contains(err.Error(), "post-quantum") {
		t.Errorf("mixing classic and post-quantum recipients: %v, want a refusal", err)
	}
}

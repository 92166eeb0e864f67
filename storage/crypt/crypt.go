// Package crypt encrypts every object of a storage.Storage at rest with age
// (https://age-encryption.org): Put encrypts for a set of public recipients,
// Open decrypts with a set of private identities. A writer needs only the
// recipients; only a reader holds an identity.
//
// Each stored object is a standard age file (binary format, 64 KiB
// ChaCha20-Poly1305 chunks) whose plaintext starts with a short header naming
// the object's key. The header binds the object to its key: a ciphertext
// moved or copied to another key is refused, as is one that is truncated,
// reordered or altered anywhere, or one that is not encrypted at all.
//
// Object names, sizes (to within a few bytes) and write times stay visible
// to whoever can list the store; the contents do not.
package crypt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// ErrTampered is wrapped by the errors of objects that do not decrypt to
// what was put under their key: damaged, truncated, reordered, altered, or
// moved from another key. Those errors also wrap storage.ErrChecksum, so
// callers that treat checksum errors as damage keep doing so.
var ErrTampered = errors.New("encrypted object is damaged or was tampered with")

// ErrNotEncrypted is wrapped by the error of opening an object that is not
// encrypted through a Storage that has identities: an encrypted archive
// holds no plaintext object, so one that appears was not written by it.
var ErrNotEncrypted = errors.New("object is not encrypted")

// ErrNoIdentity is wrapped by the error of opening an encrypted object that
// no configured identity can decrypt, or when no identity is configured.
var ErrNoIdentity = errors.New("no age identity can decrypt the object")

// ErrNoRecipient is wrapped by the error of Put on a Storage without
// recipients that was asked to encrypt.
var ErrNoRecipient = errors.New("no age recipient is configured")

// ageMagic starts every age file in the binary format.
const ageMagic = "age-encryption.org/v1\n"

// headerMagic starts the plaintext of every object, before its key.
const headerMagic = "mysql-pitr/obj/1\n"

// Options configure a Storage.
type Options struct {
	// Recipients are the public keys Put encrypts for; any one of the
	// matching identities can decrypt. Without recipients Put stores
	// objects unencrypted (a Storage that only detects encrypted objects).
	Recipients []age.Recipient
	// Identities are the private keys Open tries, in order. Several may be
	// given, e.g. the old and the new key across a rotation.
	Identities []age.Identity
}

// Storage wraps a storage.Storage, encrypting what it puts and decrypting
// what it opens.
//
// ObjectInfo from Put, Stat and List describes the stored object, as the
// wrapped store holds it: Size and CRC32C are those of the ciphertext, not
// of the plaintext. Callers that check a plaintext's length or digest keep
// their own (as the archive's records and manifests do) and compare them
// with what they read.
//
// With neither recipients nor identities a Storage is a pass-through that
// refuses to hand out encrypted objects as if they were plaintext: opening
// one is an error wrapping ErrNoIdentity.
type Storage struct {
	inner      storage.Storage
	recipients []age.Recipient
	identities []age.Identity
}

var _ storage.Storage = (*Storage)(nil)

// New returns a Storage over inner.
func New(inner storage.Storage, opts Options) (*Storage, error) {
	if inner == nil {
		return nil, errors.New("crypt: no storage to wrap")
	}
	if len(opts.Recipients) > 0 {
		// Check that the recipients can be used together (age refuses to mix
		// post-quantum and classic ones) before the first Put finds out.
		if _, err := age.Encrypt(io.Discard, opts.Recipients...); err != nil {
			return nil, fmt.Errorf("crypt: age recipients: %w", err)
		}
	}
	return &Storage{inner: inner, recipients: opts.Recipients, identities: opts.Identities}, nil
}

// Encrypts reports whether Put encrypts.
func (s *Storage) Encrypts() bool { return len(s.recipients) > 0 }

// Decrypts reports whether Open can decrypt, i.e. has at least one identity.
func (s *Storage) Decrypts() bool { return len(s.identities) > 0 }

// Inner returns the wrapped store.
func (s *Storage) Inner() storage.Storage { return s.inner }

// header returns the plaintext header that binds an object to key.
func header(key string) []byte {
	b := make([]byte, 0, len(headerMagic)+2+len(key))
	b = append(b, headerMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	return append(b, key...)
}

// Put implements storage.Storage. It encrypts as it reads r, a chunk at a
// time, so objects of any size stream through bounded memory.
func (s *Storage) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put: %w", err)
	}
	if len(s.recipients) == 0 {
		return s.inner.Put(ctx, key, r, opts)
	}
	enc, err := age.EncryptReader(io.MultiReader(bytes.NewReader(header(key)), r), s.recipients...)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: encrypt: %w", key, err)
	}
	return s.inner.Put(ctx, key, enc, opts)
}

// Seal returns the bytes Put would store for plaintext under key: what a
// caller puts into Inner itself when it must recognise its own object
// later without reading it back, by the stored size and CRC32C (a
// writer holding only recipients, whose put's answer was lost). Without
// recipients it returns plaintext.
func (s *Storage) Seal(key string, plaintext []byte) ([]byte, error) {
	if len(s.recipients) == 0 {
		return plaintext, nil
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, s.recipients...)
	if err != nil {
		return nil, fmt.Errorf("seal %s: encrypt: %w", key, err)
	}
	if _, err := w.Write(header(key)); err != nil {
		return nil, fmt.Errorf("seal %s: encrypt: %w", key, err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("seal %s: encrypt: %w", key, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("seal %s: encrypt: %w", key, err)
	}
	return buf.Bytes(), nil
}

// Open implements storage.Storage. It reads the object's age header and its
// first chunk before returning, so a wrong or missing identity, an object
// that is not encrypted or one that belongs to another key is an error from
// Open. Damage further on is an error from Read wrapping ErrTampered and
// storage.ErrChecksum; the reader returns io.EOF only after the last chunk
// has been authenticated.
func (s *Storage) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := s.inner.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	src := &recordingReader{r: rc}
	br := bufio.NewReaderSize(src, 4096)
	encrypted, err := hasMagic(br)
	if err != nil {
		rc.Close()
		if len(s.identities) == 0 {
			// Nothing says the object is encrypted (an object shorter than
			// the age header is read whole here): the store's error, a
			// checksum mismatch included, is all there is to say.
			return nil, err
		}
		return nil, s.readErr(key, src, err)
	}
	if !encrypted {
		if len(s.identities) > 0 {
			rc.Close()
			return nil, fmt.Errorf("open %s: %w: it is stored in plaintext, but this archive is read with age identities; "+
				"refusing it, since an encrypted archive never holds plaintext objects", key, ErrNotEncrypted)
		}
		return readCloser{br, rc}, nil
	}
	if len(s.identities) == 0 {
		rc.Close()
		return nil, fmt.Errorf("open %s: %w: it is encrypted with age and no age identity is configured to decrypt it", key, ErrNoIdentity)
	}
	plain, err := age.Decrypt(br, s.identities...)
	if err != nil {
		err = s.decryptErr(key, src, br, err)
		rc.Close()
		return nil, err
	}
	dr := &decryptReader{key: key, r: plain, classify: s.streamClassifier(key, src)}
	if err := dr.checkHeader(); err != nil {
		rc.Close()
		return nil, err
	}
	return readCloser{dr, rc}, nil
}

// hasMagic reports whether br starts with the age header line.
func hasMagic(br *bufio.Reader) (bool, error) {
	b, err := br.Peek(len(ageMagic))
	switch {
	case err == nil:
		return string(b) == ageMagic, nil
	case errors.Is(err, io.EOF):
		return false, nil // shorter than the magic: not an age file
	}
	return false, err
}

// damageProbe bounds how much of an object Open reads to tell a damaged
// header from a wrong identity.
const damageProbe = 4 << 20

// decryptErr explains an error of age.Decrypt, which reads the age header.
// A damaged recipient stanza looks to age like a wrong identity; reading on
// to the end of a small object lets the store's checksum tell bit rot apart.
func (s *Storage) decryptErr(key string, src *recordingReader, rest io.Reader, err error) error {
	var nm *age.NoIdentityMatchError
	if !errors.As(err, &nm) {
		return s.readErr(key, src, err)
	}
	if _, derr := io.Copy(io.Discard, io.LimitReader(rest, damageProbe)); errors.Is(derr, storage.ErrChecksum) {
		return fmt.Errorf("read %s: %w: %w", key, ErrTampered, derr)
	}
	return fmt.Errorf("open %s: %w: no configured age identity can decrypt %s; it was encrypted for other recipients", key, ErrNoIdentity, key)
}

// readErr classifies an error met while reading key: an error of the
// wrapped store (network, missing object) passes through as it is; anything
// age or this package found wrong with the bytes is tampering.
func (s *Storage) readErr(key string, src *recordingReader, err error) error {
	if src.err != nil && src.err != io.EOF && errors.Is(err, src.err) {
		if errors.Is(err, storage.ErrChecksum) {
			return fmt.Errorf("read %s: %w: %w", key, ErrTampered, err)
		}
		return err
	}
	return tampered(key, err.Error())
}

func tampered(key, why string) error {
	return fmt.Errorf("read %s: %w (%w): %s", key, ErrTampered, storage.ErrChecksum, why)
}

// recordingReader remembers the last error of the wrapped store's reader,
// so that errors age passes on can be told from errors age finds.
type recordingReader struct {
	r   io.Reader
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil {
		r.err = err
	}
	return n, err
}

// decryptReader reads an object's plaintext after its header.
type decryptReader struct {
	key string
	r   io.Reader
	// classify turns an error met reading r into the one to return.
	classify func(error) error
	err      error
}

// checkHeader reads and checks the plaintext header: it must name key.
func (d *decryptReader) checkHeader() error {
	fixed := make([]byte, len(headerMagic)+2)
	if _, err := io.ReadFull(d.r, fixed); err != nil {
		return d.classify(err)
	}
	if string(fixed[:len(headerMagic)]) != headerMagic {
		return tampered(d.key, "the plaintext does not start with a mysql-pitr object header")
	}
	name := make([]byte, binary.BigEndian.Uint16(fixed[len(headerMagic):]))
	if _, err := io.ReadFull(d.r, name); err != nil {
		return d.classify(err)
	}
	if string(name) != d.key {
		return tampered(d.key, fmt.Sprintf("it holds the encrypted object of %q: it was moved or swapped", name))
	}
	return nil
}

func (d *decryptReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	// age returns io.EOF only after authenticating the last chunk and
	// finding nothing after it.
	if err != nil && err != io.EOF {
		err = d.classify(err)
		d.err = err
	}
	return n, err
}

// streamClassifier classifies errors of a streaming decryption of src.
func (s *Storage) streamClassifier(key string, src *recordingReader) func(error) error {
	return func(err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) && src.err == io.EOF {
			return tampered(key, "the object ends before its last chunk: it was truncated")
		}
		return s.readErr(key, src, err)
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// OpenRange implements storage.Storage. Encrypted objects are read through
// age's random-access decryption: only the chunks that hold the range (and
// the header and last chunk, which authenticate the object's size) are
// fetched, each authenticated before any of its bytes is returned.
func (s *Storage) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 {
		return nil, fmt.Errorf("open %s: negative offset %d", key, offset)
	}
	if len(s.identities) == 0 && len(s.recipients) == 0 {
		return s.plainRange(ctx, key, offset, length)
	}
	info, err := s.inner.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	ra := &rangeReaderAt{ctx: ctx, st: s.inner, key: key, size: info.Size}
	magic := make([]byte, len(ageMagic))
	if n, err := ra.ReadAt(magic, 0); err != nil && !(errors.Is(err, io.EOF) && n < len(magic)) {
		return nil, err
	}
	if string(magic) != ageMagic {
		if len(s.identities) > 0 {
			return nil, fmt.Errorf("open %s: %w: it is stored in plaintext, but this archive is read with age identities; "+
				"refusing it, since an encrypted archive never holds plaintext objects", key, ErrNotEncrypted)
		}
		return s.inner.OpenRange(ctx, key, offset, length)
	}
	if len(s.identities) == 0 {
		return nil, fmt.Errorf("open %s: %w: it is encrypted with age and no age identity is configured to decrypt it", key, ErrNoIdentity)
	}
	plain, size, err := age.DecryptReaderAt(ra, info.Size, s.identities...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, fmt.Errorf("open %s: %w: no configured age identity can decrypt %s; it was encrypted for other recipients", key, ErrNoIdentity, key)
		}
		if ra.err != nil && errors.Is(err, ra.err) {
			return nil, err
		}
		return nil, tampered(key, err.Error())
	}
	classify := func(err error) error {
		if last := ra.lastErr(); last != nil && errors.Is(err, last) {
			return err
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return tampered(key, "the plaintext is too short to hold the object header")
		}
		return tampered(key, err.Error())
	}
	d := &decryptReader{key: key, r: io.NewSectionReader(plain, 0, size), classify: classify}
	if err := d.checkHeader(); err != nil {
		return nil, err
	}
	hdr := int64(len(header(key)))
	start := min(hdr+offset, size)
	end := size
	if length >= 0 && length < end-start {
		end = start + length
	}
	classify = func(err error) error {
		if last := ra.lastErr(); last != nil && errors.Is(err, last) {
			return err
		}
		return tampered(key, err.Error())
	}
	return io.NopCloser(&decryptReader{key: key, r: io.NewSectionReader(plain, start, end-start), classify: classify}), nil
}

// plainRange serves OpenRange for a Storage without keys: the object must
// not be encrypted.
func (s *Storage) plainRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.inner.OpenRange(ctx, key, 0, int64(len(ageMagic)))
	if err != nil {
		return nil, err
	}
	head, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	if string(head) == ageMagic {
		return nil, fmt.Errorf("open %s: %w: it is encrypted with age and no age identity is configured to decrypt it", key, ErrNoIdentity)
	}
	return s.inner.OpenRange(ctx, key, offset, length)
}

// rangeWindow is how much rangeReaderAt fetches at once: several age chunks,
// so that a sequential read makes few requests.
const rangeWindow = 1 << 20

// rangeReaderAt reads the stored object through ranged reads of the wrapped
// store, keeping the last window fetched.
type rangeReaderAt struct {
	ctx  context.Context
	st   storage.Storage
	key  string
	size int64

	mu     sync.Mutex
	winOff int64
	win    []byte
	err    error
}

func (r *rangeReaderAt) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", r.key, off)
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= r.size {
			return n, io.EOF
		}
		if at < r.winOff || at >= r.winOff+int64(len(r.win)) {
			if err := r.fetch(at, max(int64(len(p)-n), rangeWindow)); err != nil {
				return n, err
			}
		}
		n += copy(p[n:], r.win[at-r.winOff:])
	}
	return n, nil
}

func (r *rangeReaderAt) fetch(off, length int64) error {
	rc, err := r.st.OpenRange(r.ctx, r.key, off, length)
	if err != nil {
		r.err = err
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		r.err = err
		return err
	}
	if len(b) == 0 {
		r.err = fmt.Errorf("read %s: %w: the object ends at %d, before its listed size %d", r.key, io.ErrUnexpectedEOF, off, r.size)
		return r.err
	}
	r.winOff, r.win = off, b
	return nil
}

// Stat implements storage.Storage; the info describes the stored ciphertext.
func (s *Storage) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return s.inner.Stat(ctx, key)
}

// List implements storage.Storage; sizes are those of the stored ciphertext.
func (s *Storage) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	return s.inner.List(ctx, prefix)
}

// Delete implements storage.Storage.
func (s *Storage) Delete(ctx context.Context, key string) error {
	return s.inner.Delete(ctx, key)
}

// IsEncrypted reports whether the object stored under key in st is an age
// file, reading only its first bytes. It needs no identity, so a writer can
// tell whether an archive it is about to extend is encrypted.
func IsEncrypted(ctx context.Context, st storage.Storage, key string) (bool, error) {
	if c, ok := st.(*Storage); ok {
		st = c.inner
	}
	rc, err := st.OpenRange(ctx, key, 0, int64(len(ageMagic)))
	if err != nil {
		return false, err
	}
	defer rc.Close()
	head, err := io.ReadAll(rc)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return string(head) == ageMagic, nil
}

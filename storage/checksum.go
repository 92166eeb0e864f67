package storage

import (
	"fmt"
	"hash/crc32"
	"io"
)

// castagnoli is the CRC-32C table; the standard library uses the CPU's CRC
// instructions for it, so checksumming costs little next to the I/O.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// UpdateCRC32C returns the CRC32C of the bytes summed into crc followed by p.
// Start from 0.
func UpdateCRC32C(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// CRC32C returns the CRC32C of p, the checksum ObjectInfo.CRC32C holds.
func CRC32C(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// NewVerifyingReader returns a reader of rc that sums what it reads and, when
// rc reaches io.EOF, returns an error wrapping ErrChecksum instead if the sum
// is not want. Backends use it to give Open its guarantee; key is for the
// error message. The error is sticky: every later Read returns it too.
func NewVerifyingReader(rc io.ReadCloser, key string, want uint32) io.ReadCloser {
	return &verifyingReader{rc: rc, key: key, want: want}
}

type verifyingReader struct {
	rc   io.ReadCloser
	key  string
	want uint32
	crc  uint32
	n    int64
	err  error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.crc = UpdateCRC32C(v.crc, p[:n])
	v.n += int64(n)
	switch {
	case err == io.EOF && v.crc != v.want:
		v.err = fmt.Errorf("read %s: %w: got crc32c %08x over %d bytes, recorded %08x", v.key, ErrChecksum, v.crc, v.n, v.want)
		return n, v.err
	case err != nil:
		v.err = err
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

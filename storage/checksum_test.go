package storage

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestCRC32C(t *testing.T) {
	// The check value of CRC-32C (RFC 3720 appendix B.4).
	if got := CRC32C([]byte("123456789")); got != 0xe3069283 {
		t.Errorf("CRC32C(123456789) = %08x, want e3069283", got)
	}
	if got := UpdateCRC32C(UpdateCRC32C(0, []byte("1234")), []byte("56789")); got != 0xe3069283 {
		t.Errorf("UpdateCRC32C in two steps = %08x, want e3069283", got)
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("the quick brown fox")
	crc := CRC32C(data)
	tests := []struct {
		name    string
		read    []byte
		want    uint32
		wantErr error
	}{
		{"match", data, crc, nil},
		{"empty", nil, 0, nil},
		{"flipped", append([]byte("T"), data[1:]...), crc, ErrChecksum},
		{"truncated", data[:10], crc, ErrChecksum},
		{"extended", append(append([]byte{}, data...), 'x'), crc, ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewVerifyingReader(io.NopCloser(iotest.OneByteReader(bytes.NewReader(tt.read))), "k", tt.want)
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("ReadAll error = %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.read) {
				t.Errorf("read %q, want %q", got, tt.read)
			}
			if tt.wantErr != nil {
				// Sticky: a caller that retries Read still sees it.
				if _, err := r.Read(make([]byte, 1)); !errors.Is(err, tt.wantErr) {
					t.Errorf("second Read error = %v, want %v", err, tt.wantErr)
				}
			}
		})
	}
}

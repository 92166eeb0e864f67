package binlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// MaxEventSize bounds the events Scan accepts (the protocol's limit is 1 GiB).
const MaxEventSize = 1 << 30

// Scanner reads binlog events one by one from a byte stream that starts at
// a known position: a whole file (position 0, magic first) or a segment.
type Scanner struct {
	r   *bufio.Reader
	pos uint64
	buf []byte
	err error
}

// NewScanner returns a scanner over r, whose first byte is at position pos.
// If pos is 0 the stream must begin with the binlog magic.
func NewScanner(r io.Reader, pos uint64) *Scanner {
	return &Scanner{r: bufio.NewReaderSize(r, 256<<10), pos: pos}
}

// Next returns the next event and its position. The returned slice is
// valid until the next call. At the end of the stream it returns io.EOF;
// a stream that ends inside an event returns io.ErrUnexpectedEOF.
func (s *Scanner) Next() ([]byte, uint64, error) {
	if s.err != nil {
		return nil, 0, s.err
	}
	if s.pos == 0 {
		var m [4]byte
		if _, err := io.ReadFull(s.r, m[:]); err != nil {
			if errors.Is(err, io.EOF) {
				// Not even the magic: a truncated file, not an empty binlog.
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, s.fail(fmt.Errorf("read binlog magic: %w", err))
		}
		if !bytes.Equal(m[:], Magic) {
			return nil, 0, s.fail(fmt.Errorf("%w: not a binlog file (magic %x)", ErrMalformed, m))
		}
		s.pos = FirstEventPos
	}
	var hdr [HeaderSize]byte
	n, err := io.ReadFull(s.r, hdr[:])
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, 0, s.fail(io.EOF)
		}
		return nil, 0, s.fail(io.ErrUnexpectedEOF)
	}
	size := binary.LittleEndian.Uint32(hdr[9:])
	if size < HeaderSize || size > MaxEventSize {
		return nil, 0, s.fail(fmt.Errorf("%w: event at %d has size %d", ErrMalformed, s.pos, size))
	}
	ev := append(s.buf[:0], hdr[:]...)
	for len(ev) < int(size) {
		// Grow by what arrives, not by what the header claims: a corrupt
		// size must not cost a gigabyte before the stream runs out.
		n := min(int(size)-len(ev), 1<<20)
		ev = slices.Grow(ev, n)
		got, err := io.ReadFull(s.r, ev[len(ev):len(ev)+n])
		ev = ev[:len(ev)+got]
		if err != nil {
			return nil, 0, s.fail(io.ErrUnexpectedEOF)
		}
	}
	s.buf = ev
	pos := s.pos
	s.pos += uint64(size)
	return ev, pos, nil
}

// Pos returns the position after the last event returned.
func (s *Scanner) Pos() uint64 { return s.pos }

func (s *Scanner) fail(err error) error {
	s.err = err
	return err
}

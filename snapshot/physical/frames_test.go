package physical

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestFrameEncoder checks that a stream cut into frames and compressed on
// several goroutines decodes, as one zstd stream, to exactly the input, for
// streams that end inside, at and just past a frame, and over two streams
// from one encoder.
func TestFrameEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"INSERT", "row", "0000", "page", "\x00\x00\x00\x00", "sbtest", "xbstream"}
	var text bytes.Buffer
	for text.Len() < 3*frameBlock+frameBlock/2 {
		text.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(5) == 0 {
			text.WriteByte(byte(rng.Uint32()))
		}
	}
	input := text.Bytes()
	sizes := []int{0, 1, frameBlock - 1, frameBlock, frameBlock + 1, len(input)}
	for _, workers := range []int{1, 2, 4} {
		enc, err := newFrameEncoder(zstd.SpeedFastest, workers)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range sizes {
			t.Run(fmt.Sprintf("%d workers/%d bytes", workers, size), func(t *testing.T) {
				var out bytes.Buffer
				enc.Reset(&out)
				for rest := input[:size]; len(rest) > 0; {
					n := min(len(rest), 777777)
					if _, err := enc.Write(rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := enc.Close(); err != nil {
					t.Fatal(err)
				}
				dec, err := zstd.NewReader(&out)
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				got, err := io.ReadAll(dec)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, input[:size]) {
					t.Fatalf("decoded %d bytes, not the %d written", len(got), size)
				}
			})
		}
	}
}

// TestFrameEncoderWriterFails checks a failing destination stops the stream
// with its error, from Write once it is known and from Close.
func TestFrameEncoderWriterFails(t *testing.T) {
	errGone := errors.New("destination gone")
	enc, err := newFrameEncoder(zstd.SpeedFastest, 2)
	if err != nil {
		t.Fatal(err)
	}
	enc.Reset(failWriter{errGone})
	block := make([]byte, frameBlock)
	var writeErr error
	for range 64 {
		if _, writeErr = enc.Write(block); writeErr != nil {
			break
		}
	}
	if writeErr != nil && !errors.Is(writeErr, errGone) {
		t.Fatalf("write: %v, want %v", writeErr, errGone)
	}
	if writeErr == nil {
		t.Errorf("64 frames written after the destination failed; want Write to stop")
	}
	if err := enc.Close(); !errors.Is(err, errGone) {
		t.Fatalf("close: %v, want %v", err, errGone)
	}
	if err := enc.Close(); !errors.Is(err, errGone) {
		t.Fatalf("second close: %v, want %v", err, errGone)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

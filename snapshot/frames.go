package snapshot

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// frameEncoder compresses a stream on several goroutines by cutting it into
// blocks of frameBlock bytes and compressing each into its own zstd frame.
// Concatenated frames are a valid zstd stream that any decoder reads back
// as the original bytes. A single zstd stream compresses on one core only;
// this is what `zstd -T<n>` does too. Memory is bounded: at most 2×workers
// blocks are in flight.
//
// Write and Close are for one goroutine; Reset starts the next stream once
// Close has returned.
type frameEncoder struct {
	enc     *zstd.Encoder
	workers int
	block   int

	buf    []byte      // the block being filled
	jobs   chan *frame // blocks to compress, in stream order
	out    chan *frame // the same blocks, in stream order, for the writer
	done   chan error  // the writer's result
	free   chan []byte // input buffers to reuse
	wg     sync.WaitGroup
	err    error                 // sticky: the first error Write or Close returned
	werr   atomic.Pointer[error] // the writer's error, as soon as it has one
	w      io.Writer
	closed bool
}

// frameBlock is the uncompressed size of each frame: large enough that
// cutting the stream costs under 1% of the ratio at zstd's fast levels,
// whose windows are smaller than this anyway.
const frameBlock = 4 << 20

type frame struct {
	src   []byte
	dst   []byte
	ready chan struct{}
}

func newFrameEncoder(level zstd.EncoderLevel, workers int) (*frameEncoder, error) {
	if workers < 1 {
		workers = 1
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers))
	if err != nil {
		return nil, err
	}
	return &frameEncoder{enc: enc, workers: workers, block: frameBlock}, nil
}

// Reset starts a new stream written to w.
func (f *frameEncoder) Reset(w io.Writer) {
	f.w, f.err, f.closed = w, nil, false
	f.jobs = make(chan *frame, f.workers)
	f.out = make(chan *frame, 2*f.workers)
	f.done = make(chan error, 1)
	if f.free == nil {
		f.free = make(chan []byte, 2*f.workers+1)
	}
	for range f.workers {
		f.wg.Go(func() {
			for fr := range f.jobs {
				fr.dst = f.enc.EncodeAll(fr.src, fr.dst[:0])
				close(fr.ready)
			}
		})
	}
	out, done := f.out, f.done
	f.werr.Store(nil)
	go func() {
		var err error
		for fr := range out {
			<-fr.ready
			if err == nil {
				if _, err = w.Write(fr.dst); err != nil {
					f.werr.Store(&err)
				}
			}
			select {
			case f.free <- fr.src[:0]:
			default:
			}
		}
		done <- err
	}()
}

// Write buffers p, handing each full block to the compressors.
func (f *frameEncoder) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := len(p)
	for len(p) > 0 {
		if f.buf == nil {
			select {
			case f.buf = <-f.free:
			default:
				f.buf = make([]byte, 0, f.block)
			}
		}
		take := min(f.block-len(f.buf), len(p))
		f.buf = append(f.buf, p[:take]...)
		p = p[take:]
		if len(f.buf) == f.block {
			if err := f.send(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// send queues the current block; it fails early once the writer has
// failed, so a stream whose store is gone stops compressing.
func (f *frameEncoder) send() error {
	if err := f.werr.Load(); err != nil {
		f.err = *err
		return f.err
	}
	fr := &frame{src: f.buf, ready: make(chan struct{})}
	f.buf = nil
	f.out <- fr
	f.jobs <- fr
	return nil
}

// Close compresses what is buffered, waits for every frame to be written
// and returns the first error. The stream's writer is not closed. Closing
// again before the next Reset returns the same error.
func (f *frameEncoder) Close() error {
	if f.closed {
		return f.err
	}
	f.closed = true
	if f.err == nil && len(f.buf) > 0 {
		f.err = f.send()
	}
	close(f.jobs)
	f.wg.Wait()
	close(f.out)
	err := <-f.done
	if f.err == nil {
		f.err = err
	}
	if f.buf != nil {
		f.buf = f.buf[:0]
	}
	return f.err
}

// partEncoder compresses one part's stream at a time: Reset starts a
// stream into w, Close ends it (without closing w).
type partEncoder interface {
	Reset(w io.Writer)
	io.Writer
	Close() error
}

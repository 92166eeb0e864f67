package physical

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
// this is what `zstd -T<n>` does too.
//
// Memory is fixed: a frame's input and output buffers are made once and
// reused, and at most workers+frameSlack frames exist, one being filled,
// the others compressing or waiting to be written; Write waits for a
// frame to come back rather than make another. Compressing into a reused
// buffer of the largest size a frame can take also spares the encoder from
// growing a new output for every frame, which was most of what a snapshot
// allocated.
//
// Write and Close are for one goroutine; Reset starts the next stream once
// Close has returned.
type frameEncoder struct {
	enc     *zstd.Encoder
	workers int
	block   int
	frames  int // how many frames may exist

	cur    *frame      // the frame being filled
	jobs   chan *frame // frames to compress, in stream order
	out    chan *frame // the same frames, in stream order, for the writer
	done   chan error  // the writer's result
	free   chan *frame // frames to reuse
	made   int         // frames made so far
	wg     sync.WaitGroup
	err    error                 // sticky: the first error Write or Close returned
	werr   atomic.Pointer[error] // the writer's error, as soon as it has one
	w      io.Writer
	closed bool
}

// frameBlock is the uncompressed size of each frame: large enough that
// cutting the stream costs little of the ratio at zstd's fastest level, and
// small enough that the frames in flight stay a few MiB.
const frameBlock = 1 << 20

// frameSlack is how many frames exist beyond one per worker: the one being
// filled and one being written while every worker compresses.
const frameSlack = 2

type frame struct {
	src   []byte
	dst   []byte
	ready chan struct{}
}

func newFrameEncoder(level zstd.EncoderLevel, workers int) (*frameEncoder, error) {
	if workers < 1 {
		workers = 1
	}
	// Frames are independent: a window past the frame is never used, and
	// its history buffer would only cost memory.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers),
		zstd.WithWindowSize(frameBlock), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, err
	}
	n := workers + frameSlack
	return &frameEncoder{enc: enc, workers: workers, block: frameBlock, frames: n, free: make(chan *frame, n)}, nil
}

// Reset starts a new stream written to w.
func (f *frameEncoder) Reset(w io.Writer) {
	f.w, f.err, f.closed = w, nil, false
	f.jobs = make(chan *frame, f.workers)
	f.out = make(chan *frame, f.frames)
	f.done = make(chan error, 1)
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
			fr.src = fr.src[:0]
			f.free <- fr // never blocks: free holds every frame there is
		}
		done <- err
	}()
}

// next returns a frame to fill: a free one, a new one while fewer than
// frames exist, else the next one the writer is done with.
func (f *frameEncoder) next() *frame {
	select {
	case fr := <-f.free:
		return fr
	default:
	}
	if f.made < f.frames {
		f.made++
		return &frame{src: make([]byte, 0, f.block), dst: make([]byte, 0, f.enc.MaxEncodedSize(f.block))}
	}
	return <-f.free
}

// Write buffers p, handing each full block to the compressors.
func (f *frameEncoder) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := len(p)
	for len(p) > 0 {
		if f.cur == nil {
			f.cur = f.next()
		}
		take := min(f.block-len(f.cur.src), len(p))
		f.cur.src = append(f.cur.src, p[:take]...)
		p = p[take:]
		if len(f.cur.src) == f.block {
			if err := f.send(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// send queues the current frame; it fails early once the writer has
// failed, so a stream whose store is gone stops compressing.
func (f *frameEncoder) send() error {
	if err := f.werr.Load(); err != nil {
		f.err = *err
		return f.err
	}
	fr := f.cur
	f.cur = nil
	fr.ready = make(chan struct{})
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
	if f.err == nil && f.cur != nil && len(f.cur.src) > 0 {
		f.err = f.send()
	}
	close(f.jobs)
	f.wg.Wait()
	close(f.out)
	err := <-f.done
	if f.err == nil {
		f.err = err
	}
	if f.cur != nil {
		f.cur.src = f.cur.src[:0]
	}
	return f.err
}

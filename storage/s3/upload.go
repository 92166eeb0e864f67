package s3

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// partsInFlight is how many parts upload at once. Two keep the link busy
// while the next part is read; more would only cost memory.
const partsInFlight = 2

// abortTimeout bounds the clean-up of a failed multipart upload, which runs
// even when the Put's context has ended.
const abortTimeout = 30 * time.Second

// Put implements storage.Storage. An object of at most one part goes up in
// one PutObject; a larger one in a multipart upload, read and sent one part
// at a time.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put: %w", err)
	}
	info, err := s.put(ctx, k, r, opts)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("put %s: %w", key, err)
	}
	info.Key = key
	return info, nil
}

func (s *Store) put(ctx context.Context, k *string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	first := s.getBuf()
	n, eof, err := readPart(ctx, r, *first)
	if err != nil {
		s.putBuf(first)
		return storage.ObjectInfo{}, err
	}
	if eof {
		defer s.putBuf(first)
		return s.putSingle(ctx, k, (*first)[:n], opts)
	}
	// The first part is full: the object may still be exactly one part,
	// which only the next read can tell.
	second := s.getBuf()
	n2, eof, err := readPart(ctx, r, *second)
	if err != nil {
		s.putBuf(first)
		s.putBuf(second)
		return storage.ObjectInfo{}, err
	}
	if n2 == 0 && eof {
		s.putBuf(second)
		defer s.putBuf(first)
		return s.putSingle(ctx, k, (*first)[:n], opts)
	}
	parts := []part{{buf: first, n: n}, {buf: second, n: n2}}
	if opts.IfNotExists {
		// Spare uploading parts that CompleteMultipartUpload would refuse.
		// The conditional Complete still decides: the key may appear in
		// between.
		_, err := s.head(ctx, k)
		if err == nil {
			err = storage.ErrExist
		}
		if !errors.Is(err, storage.ErrNotExist) {
			s.putBuf(first)
			s.putBuf(second)
			return storage.ObjectInfo{}, err
		}
	}
	return s.putMultipart(ctx, k, r, opts, parts, eof)
}

// getBuf returns a part buffer, reused if one is free.
func (s *Store) getBuf() *[]byte {
	select {
	case b := <-s.free:
		return b
	default:
		b := make([]byte, s.cfg.PartSize)
		return &b
	}
}

// putBuf makes b free for reuse, or drops it for the collector when enough
// are kept.
func (s *Store) putBuf(b *[]byte) {
	select {
	case s.free <- b:
	default:
	}
}

// readPart fills buf from r. eof reports that r is exhausted; a full buf
// leaves that unknown (false). The context is checked between reads, so a
// cancelled Put stops reading.
func readPart(ctx context.Context, r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, false, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, fmt.Errorf("read source: %w", err)
		}
	}
	return n, false, nil
}

// sse returns the encryption settings for new objects.
func (s *Store) sse() (types.ServerSideEncryption, *string) {
	var kms *string
	if s.cfg.SSEKMSKeyID != "" {
		kms = aws.String(s.cfg.SSEKMSKeyID)
	}
	return types.ServerSideEncryption(s.cfg.SSE), kms
}

func (s *Store) putSingle(ctx context.Context, k *string, data []byte, opts storage.PutOptions) (storage.ObjectInfo, error) {
	crc := storage.CRC32C(data)
	sse, kms := s.sse()
	in := &s3.PutObjectInput{
		Bucket:               aws.String(s.cfg.Bucket),
		Key:                  k,
		Body:                 bytes.NewReader(data),
		ContentLength:        aws.Int64(int64(len(data))),
		ChecksumCRC32C:       crcBase64(crc),
		Metadata:             map[string]string{metaCRC: crcHex(crc)},
		ServerSideEncryption: sse,
		SSEKMSKeyId:          kms,
	}
	if opts.IfNotExists {
		in.IfNoneMatch = aws.String("*")
	}
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	if _, err := s.client.PutObject(ctx, in); err != nil {
		if opts.IfNotExists && isConditionFailed(err) {
			return storage.ObjectInfo{}, storage.ErrExist
		}
		return storage.ObjectInfo{}, err
	}
	return storage.ObjectInfo{Size: int64(len(data)), ModTime: time.Now(), CRC32C: crc}, nil
}

// part is a filled buffer waiting to be uploaded.
type part struct {
	buf *[]byte
	n   int
}

// putMultipart uploads the parts already read and the rest of r. done says
// r was found exhausted while reading them.
func (s *Store) putMultipart(ctx context.Context, k *string, r io.Reader, opts storage.PutOptions, first []part, done bool) (info storage.ObjectInfo, err error) {
	uploadID, err := s.createMultipart(ctx, k)
	if err != nil {
		s.release(first)
		return storage.ObjectInfo{}, fmt.Errorf("create multipart upload: %w", err)
	}
	completed := false
	defer func() {
		if completed {
			return
		}
		if aerr := s.abortMultipart(ctx, k, uploadID); aerr != nil {
			err = errors.Join(err, aerr)
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partsInFlight)
	u := &partUploads{s: s, k: k, uploadID: uploadID, g: g, ctx: gctx}
	readErr := u.send(r, first, done)
	uploadErr := g.Wait()
	switch {
	case ctx.Err() != nil:
		return storage.ObjectInfo{}, ctx.Err()
	case uploadErr != nil:
		// Reading stopped because an upload failed and cancelled gctx:
		// the upload's error is the cause.
		return storage.ObjectInfo{}, uploadErr
	case readErr != nil:
		return storage.ObjectInfo{}, readErr
	}
	if err := u.complete(ctx, opts.IfNotExists); err != nil {
		return storage.ObjectInfo{}, err
	}
	completed = true
	return storage.ObjectInfo{Size: u.size, ModTime: time.Now(), CRC32C: u.crc}, nil
}

// release makes the buffers of parts that will not be sent free for reuse.
func (s *Store) release(ps []part) {
	for _, p := range ps {
		s.putBuf(p.buf)
	}
}

// createMultipart starts a multipart upload of k and returns its id.
func (s *Store) createMultipart(ctx context.Context, k *string) (*string, error) {
	sse, kms := s.sse()
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket:               aws.String(s.cfg.Bucket),
		Key:                  k,
		ChecksumAlgorithm:    types.ChecksumAlgorithmCrc32c,
		ChecksumType:         types.ChecksumTypeFullObject,
		ServerSideEncryption: sse,
		SSEKMSKeyId:          kms,
	})
	if err != nil {
		return nil, err
	}
	return created.UploadId, nil
}

// abortMultipart abandons a multipart upload that will not complete. It
// runs even when ctx has ended: that is the usual reason to abandon one.
func (s *Store) abortMultipart(ctx context.Context, k, uploadID *string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket), Key: k, UploadId: uploadID,
	})
	if err != nil {
		return fmt.Errorf("abort multipart upload (its parts stay billed until a lifecycle rule removes them): %w", err)
	}
	return nil
}

// partUploads sends the parts of one multipart upload, partsInFlight at a
// time, and keeps what completing it needs: the parts sent, and the whole
// object's CRC32C and size.
type partUploads struct {
	s           *Store
	k, uploadID *string
	g           *errgroup.Group
	ctx         context.Context // the group's: ends when a part fails

	mu        sync.Mutex
	completes []types.CompletedPart
	crc       uint32
	size      int64
	number    int32
}

// send submits the parts already read, then reads and submits the rest of
// r until it ends (done: it did). It returns the error that stopped
// reading, if any.
func (u *partUploads) send(r io.Reader, first []part, done bool) error {
	var readErr error
	for i, p := range first {
		if readErr = u.submit(p); readErr != nil {
			u.s.release(first[i+1:])
			break
		}
	}
	for readErr == nil && !done {
		buf := u.s.getBuf()
		var n int
		n, done, readErr = readPart(u.ctx, r, *buf)
		if readErr != nil || n == 0 {
			u.s.putBuf(buf)
			continue
		}
		readErr = u.submit(part{buf: buf, n: n})
	}
	return readErr
}

// submit starts a part's upload, waiting for a free slot; the part's
// buffer goes back to the pool when it is sent.
func (u *partUploads) submit(p part) error {
	if u.number == MaxParts {
		u.s.putBuf(p.buf)
		return fmt.Errorf("object larger than %d parts of %d bytes: raise part-size", MaxParts, u.s.cfg.PartSize)
	}
	u.number++
	num := u.number
	data := (*p.buf)[:p.n]
	u.crc = storage.UpdateCRC32C(u.crc, data)
	u.size += int64(p.n)
	u.g.Go(func() error {
		defer u.s.putBuf(p.buf)
		c, err := u.s.uploadPart(u.ctx, u.k, u.uploadID, num, data)
		if err != nil {
			return err
		}
		u.mu.Lock()
		u.completes = append(u.completes, c)
		u.mu.Unlock()
		return nil
	})
	return nil
}

// complete assembles the parts sent into the object, which the server
// checks against its CRC32C and size. ifNotExists makes it create-only.
func (u *partUploads) complete(ctx context.Context, ifNotExists bool) error {
	slices.SortFunc(u.completes, func(a, b types.CompletedPart) int {
		return cmp.Compare(aws.ToInt32(a.PartNumber), aws.ToInt32(b.PartNumber))
	})
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(u.s.cfg.Bucket),
		Key:             u.k,
		UploadId:        u.uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: u.completes},
		// The server checks the assembled object against both.
		ChecksumCRC32C: crcBase64(u.crc),
		ChecksumType:   types.ChecksumTypeFullObject,
		MpuObjectSize:  aws.Int64(u.size),
	}
	if ifNotExists {
		in.IfNoneMatch = aws.String("*")
	}
	ctx, cancel := u.s.timeout(ctx)
	defer cancel()
	if _, err := u.s.client.CompleteMultipartUpload(ctx, in); err != nil {
		if ifNotExists && isConditionFailed(err) {
			return storage.ErrExist
		}
		return fmt.Errorf("complete multipart upload: %w", err)
	}
	return nil
}

// uploadPart sends one part with its CRC32C, which the server verifies.
func (s *Store) uploadPart(ctx context.Context, k, uploadID *string, num int32, data []byte) (types.CompletedPart, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	crc := crcBase64(storage.CRC32C(data))
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:         aws.String(s.cfg.Bucket),
		Key:            k,
		UploadId:       uploadID,
		PartNumber:     aws.Int32(num),
		Body:           bytes.NewReader(data),
		ContentLength:  aws.Int64(int64(len(data))),
		ChecksumCRC32C: crc,
	})
	if err != nil {
		return types.CompletedPart{}, fmt.Errorf("upload part %d: %w", num, err)
	}
	return types.CompletedPart{PartNumber: aws.Int32(num), ETag: out.ETag, ChecksumCRC32C: crc}, nil
}

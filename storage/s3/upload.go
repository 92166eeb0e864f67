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
	release := func(ps []part) {
		for _, p := range ps {
			s.putBuf(p.buf)
		}
	}
	sse, kms := s.sse()
	cctx, cancel := s.timeout(ctx)
	created, err := s.client.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{
		Bucket:               aws.String(s.cfg.Bucket),
		Key:                  k,
		ChecksumAlgorithm:    types.ChecksumAlgorithmCrc32c,
		ChecksumType:         types.ChecksumTypeFullObject,
		ServerSideEncryption: sse,
		SSEKMSKeyId:          kms,
	})
	cancel()
	if err != nil {
		release(first)
		return storage.ObjectInfo{}, fmt.Errorf("create multipart upload: %w", err)
	}
	uploadID := created.UploadId
	completed := false
	defer func() {
		if completed {
			return
		}
		// Abort even when ctx has ended: that is the usual reason to be here.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
		defer cancel()
		_, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.cfg.Bucket), Key: k, UploadId: uploadID,
		})
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("abort multipart upload (its parts stay billed until a lifecycle rule removes them): %w", aerr))
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(partsInFlight)
	var (
		mu        sync.Mutex
		completes []types.CompletedPart
		crc       uint32
		size      int64
		number    int32
	)
	// submit starts a part's upload, waiting for a free slot; the part's
	// buffer goes back to the pool when it is sent.
	submit := func(p part) error {
		if number == MaxParts {
			s.putBuf(p.buf)
			return fmt.Errorf("object larger than %d parts of %d bytes: raise part-size", MaxParts, s.cfg.PartSize)
		}
		number++
		num := number
		data := (*p.buf)[:p.n]
		crc = storage.UpdateCRC32C(crc, data)
		size += int64(p.n)
		g.Go(func() error {
			defer s.putBuf(p.buf)
			c, err := s.uploadPart(gctx, k, uploadID, num, data)
			if err != nil {
				return err
			}
			mu.Lock()
			completes = append(completes, c)
			mu.Unlock()
			return nil
		})
		return nil
	}

	var readErr error
	for i, p := range first {
		if readErr = submit(p); readErr != nil {
			release(first[i+1:])
			break
		}
	}
	for readErr == nil && !done {
		buf := s.getBuf()
		var n int
		n, done, readErr = readPart(gctx, r, *buf)
		if readErr != nil || n == 0 {
			s.putBuf(buf)
			continue
		}
		readErr = submit(part{buf: buf, n: n})
	}
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

	slices.SortFunc(completes, func(a, b types.CompletedPart) int {
		return cmp.Compare(aws.ToInt32(a.PartNumber), aws.ToInt32(b.PartNumber))
	})
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.cfg.Bucket),
		Key:             k,
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: completes},
		// The server checks the assembled object against both.
		ChecksumCRC32C: crcBase64(crc),
		ChecksumType:   types.ChecksumTypeFullObject,
		MpuObjectSize:  aws.Int64(size),
	}
	if opts.IfNotExists {
		in.IfNoneMatch = aws.String("*")
	}
	cctx, cancel = s.timeout(ctx)
	defer cancel()
	if _, err := s.client.CompleteMultipartUpload(cctx, in); err != nil {
		if opts.IfNotExists && isConditionFailed(err) {
			return storage.ObjectInfo{}, storage.ErrExist
		}
		return storage.ObjectInfo{}, fmt.Errorf("complete multipart upload: %w", err)
	}
	completed = true
	return storage.ObjectInfo{Size: size, ModTime: time.Now(), CRC32C: crc}, nil
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

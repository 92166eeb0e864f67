// Package s3 is the storage backend on Amazon S3 and S3-compatible servers
// (MinIO, Ceph RGW, versitygw, ...), configured by an s3:// URL (ParseURL).
//
// Credentials come only from the AWS SDK's default chain: environment,
// shared config files, web identity (IRSA) or an instance role.
//
// # Integrity
//
// Put computes the object's CRC32C while streaming and has the server check
// it: PutObject carries it as x-amz-checksum-crc32c; a multipart upload is
// created with the CRC32C algorithm and the FULL_OBJECT checksum type, each
// part carries its own CRC32C, and CompleteMultipartUpload carries the
// whole object's CRC32C and size, which the server compares with what it
// assembled (S3 and versitygw 1.8 both do; a mismatch fails the Put with
// BadDigest). Single-part objects also keep the CRC32C as user metadata
// "crc32c" (hex), so that copies made by tools that drop or change the
// server checksum stay verifiable.
//
// Open asks for the stored checksum (ChecksumMode ENABLED) and checks the
// bytes it reads against the full-object CRC32C, or against the metadata
// when the server has none, returning storage.ErrChecksum at EOF on a
// mismatch; the SDK's own response validation is turned off for it, so that
// a mismatch has that one recognisable form. An object with neither, written
// by another tool, is read unverified and has a zero CRC32C in Stat.
//
// # Atomicity
//
// S3 never shows a partial object. An abandoned multipart upload is aborted;
// a process killed mid-upload leaves its parts invisible but billed, so
// buckets should have a lifecycle rule aborting incomplete multipart uploads
// after a day or so. Put with IfNotExists sends If-None-Match: * with the
// PutObject or CompleteMultipartUpload, which S3 evaluates atomically; a
// retry of a request whose response was lost can therefore report
// storage.ErrExist for an object this very Put created.
//
// # Memory
//
// Put holds at most three parts in memory: two uploading, one being read.
package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// metaCRC is the user metadata key holding a single-part object's CRC32C.
const metaCRC = "crc32c"

// responseHeaderTimeout is how long a request may wait for the server to
// start answering once it has been sent: a hung server becomes a retryable
// error instead of a stuck backup.
const responseHeaderTimeout = time.Minute

// Store is a storage.Storage on an S3 bucket under a prefix. It is safe for
// concurrent use.
type Store struct {
	cfg    Config
	client *s3.Client
	// free holds part buffers between uses, so that a stream of small
	// Puts does not allocate a part each. Its capacity bounds what stays
	// allocated when idle.
	free chan *[]byte
	// listPageSize overrides the server's page size for ListObjectsV2, so
	// tests can cover pagination with a few keys; 0 leaves it to the server.
	listPageSize int32
}

var _ storage.Storage = (*Store)(nil)

// New returns a Store for cfg after checking that the bucket exists and the
// credentials may use it.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3 config: %w", err)
	}
	cfg = cfg.withDefaults()
	var roots *x509.CertPool
	if cfg.CAFile != "" {
		var err error
		if roots, err = readCAFile(cfg.CAFile); err != nil {
			return nil, err
		}
	}

	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
				// The default retry quota gives up on retries after a run
				// of failures; a backup agent outliving an outage wants
				// every request to get its attempts.
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.ResponseHeaderTimeout = responseHeaderTimeout
			if roots != nil {
				if t.TLSClientConfig == nil {
					t.TLSClientConfig = &tls.Config{}
				}
				t.TLSClientConfig.RootCAs = roots
			}
		})),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	if awsCfg.Region == "" {
		if cfg.Endpoint == "" {
			return nil, errors.New("s3: no region: set region= in the URL, or AWS_REGION")
		}
		awsCfg.Region = DefaultRegion
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	s := &Store{cfg: cfg, client: client, free: make(chan *[]byte, partsInFlight+1)}
	if err := s.checkBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkBucket turns a misconfigured bucket into a clear error at start-up
// rather than at the first backup.
func (s *Store) checkBucket(ctx context.Context) error {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	if err == nil {
		return nil
	}
	// HeadBucket answers have no body, so the status is all there is.
	switch httpStatus(err) {
	case http.StatusNotFound:
		return fmt.Errorf("s3: bucket %s does not exist", s.cfg.Bucket)
	case http.StatusForbidden:
		return fmt.Errorf("s3: access denied to bucket %s: check the credentials and the bucket policy", s.cfg.Bucket)
	case http.StatusMovedPermanently:
		return fmt.Errorf("s3: bucket %s is in another region than %s", s.cfg.Bucket, s.client.Options().Region)
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &cv) {
		trusted := "the system's roots"
		if s.cfg.CAFile != "" {
			trusted = "the CA file " + s.cfg.CAFile
		}
		return fmt.Errorf("s3: the endpoint's TLS certificate is not trusted by %s (a server with a private CA needs its CA bundle, --s3-ca-file): %w", trusted, err)
	}
	return fmt.Errorf("s3: check bucket %s: %w", s.cfg.Bucket, err)
}

// readCAFile reads a PEM bundle of CA certificates.
func readCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("s3 CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("s3 CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Config returns the configuration the Store runs with, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// timeout bounds one API call, retries included.
func (s *Store) timeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// objectKey checks key and prepends the prefix.
func (s *Store) objectKey(key string) (*string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, err
	}
	return aws.String(s.cfg.Prefix + key), nil
}

// Open implements storage.Storage.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	out, err := s.get(ctx, &s3.GetObjectInput{
		Bucket:       aws.String(s.cfg.Bucket),
		Key:          k,
		ChecksumMode: types.ChecksumModeEnabled,
	}, withoutSDKResponseValidation)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, mapNotExist(err))
	}
	crc, ok := objectCRC(out.ChecksumCRC32C, out.ChecksumType, out.Metadata)
	if !ok {
		return out.Body, nil
	}
	return storage.NewVerifyingReader(out.Body, key, crc), nil
}

// get is GetObject with RequestTimeout on getting the response, but not on
// reading its body, which takes as long as the caller reads.
func (s *Store) get(parent context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	ctx, cancel := context.WithCancelCause(parent)
	timer := time.AfterFunc(s.cfg.RequestTimeout, func() {
		cancel(fmt.Errorf("no response within %s: %w", s.cfg.RequestTimeout, context.DeadlineExceeded))
	})
	out, err := s.client.GetObject(ctx, in, optFns...)
	if !timer.Stop() && parent.Err() == nil {
		// The timeout fired: the SDK reports only "context canceled", and
		// a response that arrived meanwhile has its body cut off.
		if err == nil {
			out.Body.Close()
		}
		err = context.Cause(ctx)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	out.Body = &cancelOnClose{ReadCloser: out.Body, cancel: func() { cancel(nil) }}
	return out, nil
}

// cancelOnClose releases a body's context when the body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// withoutSDKResponseValidation removes the SDK's checking of GetObject
// bodies: Open checks them itself, and the SDK's mismatch error is of an
// unexported type that could not be reported as storage.ErrChecksum.
func withoutSDKResponseValidation(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
		_, _ = st.Deserialize.Remove("AWSChecksum:ValidateOutputPayloadChecksum")
		return nil
	})
}

// OpenRange implements storage.Storage. An offset at or past the end reads
// nothing.
func (s *Store) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("open %s: negative offset %d", key, offset)
	}
	if length == 0 {
		// HTTP cannot ask for zero bytes; only existence needs checking.
		if _, err := s.head(ctx, k); err != nil {
			return nil, fmt.Errorf("open %s: %w", key, err)
		}
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	rng := fmt.Sprintf("bytes=%d-", offset)
	if length > 0 {
		rng += strconv.FormatInt(offset+length-1, 10)
	}
	out, err := s.get(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: k, Range: aws.String(rng)})
	if httpStatus(err) == http.StatusRequestedRangeNotSatisfiable {
		// Only an existing object has a range to miss: the offset is at
		// or past its end (or it is empty).
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, mapNotExist(err))
	}
	return out.Body, nil
}

// Stat implements storage.Storage.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	k, err := s.objectKey(key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat: %w", err)
	}
	out, err := s.head(ctx, k)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	crc, _ := objectCRC(out.ChecksumCRC32C, out.ChecksumType, out.Metadata)
	return storage.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
		CRC32C:  crc,
	}, nil
}

// head is HeadObject of the full key k, with a missing object reported as
// storage.ErrNotExist.
func (s *Store) head(ctx context.Context, k *string) (*s3.HeadObjectOutput, error) {
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket:       aws.String(s.cfg.Bucket),
		Key:          k,
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		return nil, mapNotExist(err)
	}
	return out, nil
}

// List implements storage.Storage. ListObjectsV2 does not return checksums,
// so CRC32C is zero.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.ObjectInfo, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	var out []storage.ObjectInfo
	in := &s3.ListObjectsV2Input{
		Bucket: aws.String(s.cfg.Bucket),
		Prefix: aws.String(s.cfg.Prefix + prefix),
	}
	if s.listPageSize > 0 {
		in.MaxKeys = aws.Int32(s.listPageSize)
	}
	pages := s3.NewListObjectsV2Paginator(s.client, in)
	for pages.HasMorePages() {
		pctx, cancel := s.timeout(ctx)
		page, err := pages.NextPage(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
		for _, o := range page.Contents {
			key, ok := strings.CutPrefix(aws.ToString(o.Key), s.cfg.Prefix)
			// A key ending in "/" is a folder marker made by a console
			// or a filesystem gateway, not one of our objects.
			if !ok || storage.ValidateKey(key) != nil {
				continue
			}
			out = append(out, storage.ObjectInfo{Key: key, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
		}
	}
	// S3 lists in UTF-8 binary order, which is byte order, but not every
	// compatible server does.
	slices.SortFunc(out, func(a, b storage.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements storage.Storage.
func (s *Store) Delete(ctx context.Context, key string) error {
	k, err := s.objectKey(key)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	ctx, cancel := s.timeout(ctx)
	defer cancel()
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: k})
	if err != nil && !errors.Is(mapNotExist(err), storage.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// objectCRC finds the object's whole CRC32C: the server's full-object
// checksum, else the metadata Put stored. A composite checksum ("...-N", a
// checksum of part checksums) cannot be compared with the bytes' CRC32C.
func objectCRC(header *string, typ types.ChecksumType, meta map[string]string) (uint32, bool) {
	if h := aws.ToString(header); h != "" && typ != types.ChecksumTypeComposite && !strings.Contains(h, "-") {
		if b, err := base64.StdEncoding.DecodeString(h); err == nil && len(b) == 4 {
			return binary.BigEndian.Uint32(b), true
		}
	}
	for k, v := range meta {
		if strings.EqualFold(k, metaCRC) {
			if b, err := hex.DecodeString(v); err == nil && len(b) == 4 {
				return binary.BigEndian.Uint32(b), true
			}
		}
	}
	return 0, false
}

// crcBase64 is the x-amz-checksum-crc32c form of crc.
func crcBase64(crc uint32) *string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], crc)
	return aws.String(base64.StdEncoding.EncodeToString(b[:]))
}

// crcHex is the metadata form of crc.
func crcHex(crc uint32) string { return fmt.Sprintf("%08x", crc) }

// httpStatus returns the HTTP status of an S3 error, or 0.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// errorCode returns the S3 error code ("NoSuchKey"), or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// mapNotExist replaces a missing-object error with storage.ErrNotExist. A
// missing bucket is not a missing object and is left as it is.
func mapNotExist(err error) error {
	switch code := errorCode(err); {
	case code == "NoSuchKey" || code == "NotFound":
		return storage.ErrNotExist
	case code == "NoSuchBucket":
		return err
	case httpStatus(err) == http.StatusNotFound:
		return storage.ErrNotExist
	}
	return err
}

// isConditionFailed reports whether err is an If-None-Match refusal: 412
// when the object exists, or 409 when a concurrent conditional write to the
// same key won.
func isConditionFailed(err error) bool {
	switch errorCode(err) {
	case "PreconditionFailed", "ConditionalRequestConflict":
		return true
	}
	st := httpStatus(err)
	return st == http.StatusPreconditionFailed
}

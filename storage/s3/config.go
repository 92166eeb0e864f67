package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/bytesize"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// Defaults for the Config fields left zero.
const (
	// DefaultPartSize is the multipart part size, and so the unit of
	// memory a Put holds (up to three parts).
	DefaultPartSize = 8 << 20
	// DefaultMaxAttempts is how many times a request is tried before its
	// error is returned.
	DefaultMaxAttempts = 8
	// DefaultMaxBackoff caps the exponential wait between attempts.
	DefaultMaxBackoff = 20 * time.Second
	// DefaultRequestTimeout bounds one API call with its retries, or one
	// part's upload; long enough for a part on a slow link with every retry.
	DefaultRequestTimeout = 5 * time.Minute
	// DefaultRegion is used with a custom endpoint when no region is
	// configured anywhere: S3-compatible servers mostly accept any.
	DefaultRegion = "us-east-1"
)

// Part size limits set by S3: every part but the last is at least
// MinPartSize, and an upload has at most MaxParts parts.
const (
	MinPartSize = 5 << 20
	MaxPartSize = 5 << 30
	MaxParts    = 10000
)

// Server-side encryption modes for Config.SSE.
const (
	SSES3  = "AES256"
	SSEKMS = "aws:kms"
)

// Config says which bucket and prefix a Store uses and how it reaches them.
// It holds no credentials: those come from the AWS SDK's default chain
// (environment, shared config files, web identity, instance roles).
type Config struct {
	// Bucket is the bucket name.
	Bucket string
	// Prefix is prepended to every key: empty, or ending in "/".
	Prefix string
	// Region is the bucket's region; empty takes the SDK's default
	// (AWS_REGION, shared config), then DefaultRegion with a custom Endpoint.
	Region string
	// Endpoint is the base URL of an S3-compatible server
	// ("https://minio.example:9000"); empty means AWS.
	Endpoint string
	// PathStyle addresses the bucket in the URL path rather than the host
	// name, as most S3-compatible servers need.
	PathStyle bool
	// CAFile is a PEM bundle of the CAs trusted to sign an https
	// endpoint's certificate, instead of the system's roots: for a server
	// with a private CA. It is read when the Store is created.
	CAFile string
	// SSE is the server-side encryption of new objects: "", SSES3 or SSEKMS.
	SSE string
	// SSEKMSKeyID is the KMS key for SSEKMS; empty means the account's default.
	SSEKMSKeyID string
	// PartSize is the multipart part size in bytes, between MinPartSize and
	// MaxPartSize; zero means DefaultPartSize. Objects up to one part go in
	// one PutObject. It also caps an object at MaxParts parts.
	PartSize int64
	// MaxAttempts is how many times a request is tried; zero means DefaultMaxAttempts.
	MaxAttempts int
	// MaxBackoff caps the wait between attempts; zero means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// RequestTimeout bounds each API call with its retries (for Open, until
	// the response starts); zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// urlParams are the query parameters ParseURL knows.
var urlParams = []string{"endpoint", "part-size", "path-style", "region", "sse", "sse-kms-key-id"}

// ParseURL parses a location of the form
//
//	s3://BUCKET[/PREFIX][?region=R&endpoint=https://host:port&path-style=true&sse=AES256|aws:kms&sse-kms-key-id=ID&part-size=16MiB]
//
// into a Config. A URL carrying credentials (s3://key:secret@bucket) is
// refused, with an error that does not repeat it: credentials belong in the
// SDK's default chain, not in a URL that ends up in argv, configs and logs.
func ParseURL(raw string) (Config, error) {
	c, err := parseURL(raw)
	if err != nil {
		return Config{}, fmt.Errorf("s3 URL: %w", err)
	}
	return c, nil
}

// errCredentials is the refusal of a URL with user information.
var errCredentials = errors.New("credentials are not accepted in the URL (not shown); " +
	"provide them through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a shared config profile or web identity")

func parseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, and its inner errors can repeat parts
		// of the authority, which is where a secret would be.
		if strings.Contains(raw, "@") {
			return Config{}, errors.New("malformed URL (not shown: it may hold credentials)")
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return Config{}, fmt.Errorf("malformed URL: %w", err)
	}
	if u.User != nil {
		return Config{}, errCredentials
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("scheme %q, want s3://BUCKET/PREFIX", u.Scheme)
	}
	if u.Opaque != "" {
		return Config{}, errors.New("want s3://BUCKET/PREFIX")
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return Config{}, errors.New("fragment (#...) not allowed")
	}
	if u.Host == "" {
		return Config{}, errors.New("missing bucket: want s3://BUCKET/PREFIX")
	}
	if u.Port() != "" {
		return Config{}, fmt.Errorf("bucket %q has a port: give the server as endpoint=URL", u.Host)
	}
	c := Config{Bucket: u.Host}
	if err := checkBucket(c.Bucket); err != nil {
		return Config{}, err
	}
	if c.Prefix, err = normalizePrefix(u.Path); err != nil {
		return Config{}, err
	}

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("malformed query: %w", err)
	}
	for name, vals := range q {
		if !slices.Contains(urlParams, name) {
			return Config{}, fmt.Errorf("unknown parameter %q (known: %s)", name, strings.Join(urlParams, ", "))
		}
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("parameter %q given %d times", name, len(vals))
		}
	}
	c.Region = q.Get("region")
	c.Endpoint = q.Get("endpoint")
	c.SSE = q.Get("sse")
	c.SSEKMSKeyID = q.Get("sse-kms-key-id")
	if v := q.Get("path-style"); v != "" {
		if c.PathStyle, err = strconv.ParseBool(v); err != nil {
			return Config{}, fmt.Errorf("path-style %q: want true or false", v)
		}
	}
	if v := q.Get("part-size"); v != "" {
		if c.PartSize, err = bytesize.Parse(v); err == nil && c.PartSize <= 0 {
			err = errors.New("want a positive size")
		}
		if err != nil {
			return Config{}, fmt.Errorf("part-size %q: %w", v, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// bucketName is S3's rule for new buckets: 3 to 63 lower-case letters,
// digits, dots and hyphens, starting and ending with a letter or digit.
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// regionName is loose: S3-compatible servers name regions as they like, but
// a region goes into signatures and host names.
var regionName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func checkBucket(b string) error {
	if b == "" {
		return errors.New("missing bucket")
	}
	if !bucketName.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("bucket %q: want 3-63 lower-case letters, digits, dots and hyphens", b)
	}
	return nil
}

// normalizePrefix turns a URL path into a key prefix: no leading slash, a
// trailing one unless empty, and each segment a valid key segment.
func normalizePrefix(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	if err := storage.ValidateKey(p); err != nil {
		return "", fmt.Errorf("prefix: %w", err)
	}
	return p + "/", nil
}

// Validate checks the fields and names the first bad one. Zero values that
// have defaults are fine.
func (c Config) Validate() error {
	if err := checkBucket(c.Bucket); err != nil {
		return err
	}
	if c.Prefix != "" {
		if !strings.HasSuffix(c.Prefix, "/") {
			return fmt.Errorf("prefix %q: must end in /", c.Prefix)
		}
		if err := storage.ValidateKey(strings.TrimSuffix(c.Prefix, "/")); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	if c.Region != "" && !regionName.MatchString(c.Region) {
		return fmt.Errorf("region %q: want letters, digits, dots, hyphens and underscores", c.Region)
	}
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil || u.User != nil:
			// Not echoed: an endpoint URL could carry a password.
			return errors.New("endpoint: want http(s)://host[:port] without credentials")
		case u.Scheme != "http" && u.Scheme != "https":
			return fmt.Errorf("endpoint %q: want an http:// or https:// URL", c.Endpoint)
		case u.Host == "":
			return fmt.Errorf("endpoint %q: no host", c.Endpoint)
		case u.RawQuery != "" || u.Fragment != "":
			return fmt.Errorf("endpoint %q: no query or fragment allowed", c.Endpoint)
		}
	}
	if c.CAFile != "" && strings.HasPrefix(strings.ToLower(c.Endpoint), "http://") {
		return fmt.Errorf("a CA file is for an https endpoint; endpoint %q is plain http", c.Endpoint)
	}
	switch c.SSE {
	case "", SSES3, SSEKMS:
	default:
		return fmt.Errorf("sse %q: want %s or %s", c.SSE, SSES3, SSEKMS)
	}
	if c.SSEKMSKeyID != "" && c.SSE != SSEKMS {
		return fmt.Errorf("sse-kms-key-id needs sse=%s", SSEKMS)
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		return fmt.Errorf("part-size %d: want between 5MiB and 5GiB", c.PartSize)
	}
	if c.MaxAttempts < 0 || c.MaxBackoff < 0 || c.RequestTimeout < 0 {
		return errors.New("max attempts, max backoff and request timeout must not be negative")
	}
	return nil
}

// PlaintextEndpoint reports whether requests go unencrypted across a
// network: an http:// endpoint on a host other than this one's loopback.
func (c Config) PlaintextEndpoint() bool {
	u, err := url.Parse(c.Endpoint)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// withDefaults fills the zero fields that have defaults.
func (c Config) withDefaults() Config {
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// String renders the Config as the s3:// URL that ParseURL reads back. It
// holds nothing secret, so it is safe to log.
func (c Config) String() string {
	q := url.Values{}
	if c.Region != "" {
		q.Set("region", c.Region)
	}
	if c.Endpoint != "" {
		q.Set("endpoint", c.Endpoint)
	}
	if c.PathStyle {
		q.Set("path-style", "true")
	}
	if c.SSE != "" {
		q.Set("sse", c.SSE)
	}
	if c.SSEKMSKeyID != "" {
		q.Set("sse-kms-key-id", c.SSEKMSKeyID)
	}
	if c.PartSize != 0 {
		q.Set("part-size", strconv.FormatInt(c.PartSize, 10))
	}
	u := url.URL{Scheme: "s3", Host: c.Bucket, Path: "/" + c.Prefix, RawQuery: q.Encode()}
	return u.String()
}

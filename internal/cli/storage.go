package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/s3"
)

// Access is what a command does with the archive: it decides how the
// archive is opened and which age keys the command needs.
type Access int

const (
	// Read commands (list, verify, binlog fetch, restore, drill) only read:
	// the archive must exist, and nothing is created, swept or written
	// (every write fails), so they work on a read-only mount or with
	// read-only credentials. An encrypted archive needs --age-identity;
	// recipients are not used.
	Read Access = iota
	// Amend commands (prune, drill --record) read an existing archive and
	// write a few records: they need --age-identity, and encrypt what they
	// write for --age-recipient, or for the identities' own public keys when
	// none is given.
	Amend
	// Write commands (agent, snapshot) write, and may start the archive (a
	// missing file:// directory is created): they need the public
	// --age-recipient keys and no identity, and refuse keys that do not
	// match the archive's encryption.
	Write
)

// StorageFlags choose the archive's storage and its encryption.
type StorageFlags struct {
	url       string
	region    string
	endpoint  string
	pathStyle string
	sse       string
	kmsKey    string
	caFile    string
	age       ageFlags
}

// Register adds the storage, S3 and age flags to fs.
func (s *StorageFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&s.url, "storage", "", "archive location: file:///path or s3://bucket/prefix[?region=&endpoint=&path-style=true&sse=]")
	fs.StringVar(&s.region, "s3-region", "", "S3 region (overrides the URL's region parameter)")
	fs.StringVar(&s.endpoint, "s3-endpoint", "", "S3-compatible endpoint URL, e.g. https://minio:9000 (overrides the URL's endpoint)")
	fs.StringVar(&s.pathStyle, "s3-path-style", "", "true for path-style S3 addressing (overrides the URL's path-style)")
	fs.StringVar(&s.sse, "s3-sse", "", "S3 server-side encryption: AES256 or aws:kms")
	fs.StringVar(&s.kmsKey, "s3-sse-kms-key-id", "", "KMS key for --s3-sse aws:kms")
	s.age.register(fs)
	fs.StringVar(&s.caFile, "s3-ca-file", "", "PEM bundle of the CAs that sign an https S3 endpoint's certificate, instead of the system's roots (a private CA)")
}

// URL is the --storage value.
func (s *StorageFlags) URL() string { return s.url }

// Open opens the archive for access, with the age layer over the backend;
// warnings (a plain http endpoint, an identity file everyone can read) go
// to logger.
func (s *StorageFlags) Open(ctx context.Context, access Access, logger *slog.Logger) (storage.Storage, error) {
	st, err := s.backend(ctx, access == Write, logger)
	if err != nil {
		return nil, err
	}
	if st, err = s.age.wrap(ctx, st, access, logger); err != nil {
		return nil, err
	}
	if access == Write {
		return st, nil
	}
	if err := catalog.CheckArchive(ctx, st); err != nil {
		return nil, fmt.Errorf("--storage %s: %w", s.shown(), err)
	}
	if access == Read {
		return storage.ReadOnly(st), nil
	}
	return st, nil
}

// backend builds the backend the URL names; with create a missing file://
// directory is created.
func (s *StorageFlags) backend(ctx context.Context, create bool, logger *slog.Logger) (storage.Storage, error) {
	if s.url == "" {
		return nil, Usage(fmt.Errorf("--storage is required (file:///path or s3://bucket/prefix)"))
	}
	scheme, rest, ok := strings.Cut(s.url, "://")
	if !ok {
		return nil, Usage(fmt.Errorf("--storage %s: expected file:///path or s3://bucket/prefix", s.shown()))
	}
	switch scheme {
	case "file":
		return s.fileBackend(rest, create)
	case "s3":
		cfg, err := s.s3Config()
		if err != nil {
			return nil, err
		}
		if cfg.PlaintextEndpoint() {
			// At every start: archive data across a network unencrypted.
			logger.Warn("the S3 endpoint is plain http: archive data and request signatures cross the network unencrypted; use https", "endpoint", cfg.Endpoint)
		}
		return s3.New(ctx, cfg)
	}
	if s.hidden() {
		return nil, Usage(fmt.Errorf("--storage %s: the scheme is not file or s3", s.shown()))
	}
	return nil, Usage(fmt.Errorf("--storage %q: unknown scheme %q (file or s3)", s.url, scheme))
}

// fileBackend opens the file:// archive whose URL, after the scheme, is rest.
func (s *StorageFlags) fileBackend(rest string, create bool) (storage.Storage, error) {
	u, err := url.Parse(s.url)
	if err != nil || u.Host != "" || u.Path == "" || !strings.HasPrefix(rest, "/") {
		return nil, Usage(fmt.Errorf("--storage %s: a file URL needs an absolute path, as in file:///var/lib/mysql-pitr", s.shown()))
	}
	if create {
		return file.New(u.Path)
	}
	st, err := file.Open(u.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--storage %s: %w: the directory %s does not exist", s.shown(), catalog.ErrNoArchive, u.Path)
	}
	return st, err
}

// s3Config is the s3:// URL with the S3 flags over it.
func (s *StorageFlags) s3Config() (s3.Config, error) {
	cfg, err := s3.ParseURL(s.url)
	if err != nil {
		return cfg, Usage(err)
	}
	if s.region != "" {
		cfg.Region = s.region
	}
	if s.endpoint != "" {
		cfg.Endpoint = s.endpoint
	}
	switch s.pathStyle {
	case "":
	case "true", "1", "yes":
		cfg.PathStyle = true
	case "false", "0", "no":
		cfg.PathStyle = false
	default:
		return cfg, Usage(fmt.Errorf("--s3-path-style %q: want true or false", s.pathStyle))
	}
	if s.sse != "" {
		cfg.SSE = s.sse
	}
	if s.kmsKey != "" {
		cfg.SSEKMSKeyID = s.kmsKey
	}
	cfg.CAFile = s.caFile
	if err := cfg.Validate(); err != nil {
		return cfg, Usage(err)
	}
	return cfg, nil
}

// hidden reports whether errors must not show the --storage value: with an
// '@' it may carry credentials (user:secret@host), which would then reach
// a log. The s3 package keeps them out of its own errors the same way.
func (s *StorageFlags) hidden() bool { return strings.Contains(s.url, "@") }

// shown is the --storage value as an error may show it.
func (s *StorageFlags) shown() string {
	if s.hidden() {
		return "(value not shown: it holds an @ and may carry credentials)"
	}
	return strconv.Quote(s.url)
}

// ID is a short stable name for the archive location, for the spool's
// subdirectory.
func (s *StorageFlags) ID() string {
	u := s.url
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	h := sha256.Sum256([]byte(u))
	return hex.EncodeToString(h[:6])
}

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/file"
	"github.com/mysql-pitr/mysql-pitr/storage/s3"
)

// storageFlags choose the archive's storage.
type storageFlags struct {
	url       string
	region    string
	endpoint  string
	pathStyle string
	sse       string
	kmsKey    string
	age       ageFlags
	caFile    string
	tlsLog    storageLog
}

func (s *storageFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.url, "storage", "", "archive location: file:///path or s3://bucket/prefix[?region=&endpoint=&path-style=true&sse=]")
	fs.StringVar(&s.region, "s3-region", "", "S3 region (overrides the URL's region parameter)")
	fs.StringVar(&s.endpoint, "s3-endpoint", "", "S3-compatible endpoint URL, e.g. https://minio:9000 (overrides the URL's endpoint)")
	fs.StringVar(&s.pathStyle, "s3-path-style", "", "true for path-style S3 addressing (overrides the URL's path-style)")
	fs.StringVar(&s.sse, "s3-sse", "", "S3 server-side encryption: AES256 or aws:kms")
	fs.StringVar(&s.kmsKey, "s3-sse-kms-key-id", "", "KMS key for --s3-sse aws:kms")
	s.age.register(fs)
	s.registerTLS(fs)
}

// open builds the backend the URL names, with the age layer over it, for
// a command that writes the archive and may start it: a file:// directory
// is created when missing.
func (s *storageFlags) open(ctx context.Context) (storage.Storage, error) {
	st, err := s.backend(ctx, true)
	if err != nil {
		return nil, err
	}
	return s.age.wrap(ctx, st)
}

// openExisting opens an archive that must already exist, for a command that
// changes it without starting one (prune): it creates nothing, and a
// location that holds no archive is an error that says so.
func (s *storageFlags) openExisting(ctx context.Context) (storage.Storage, error) {
	st, err := s.backend(ctx, false)
	if err != nil {
		return nil, err
	}
	if st, err = s.age.wrap(ctx, st); err != nil {
		return nil, err
	}
	if err := catalog.CheckArchive(ctx, st); err != nil {
		return nil, fmt.Errorf("--storage %s: %w", s.shown(), err)
	}
	return st, nil
}

// openReader opens an archive for a command that only reads it (list,
// verify, fetch, restore, drill without --record): it creates, sweeps and
// writes nothing (every write fails), so it works on a read-only mount or
// with read-only credentials; a location that holds no archive is an error.
func (s *storageFlags) openReader(ctx context.Context) (storage.Storage, error) {
	st, err := s.openExisting(ctx)
	if err != nil {
		return nil, err
	}
	return storage.ReadOnly(st), nil
}

// backend builds the backend the URL names; with create a missing file://
// directory is created.
func (s *storageFlags) backend(ctx context.Context, create bool) (storage.Storage, error) {
	if s.url == "" {
		return nil, usageError{fmt.Errorf("--storage is required (file:///path or s3://bucket/prefix)")}
	}
	scheme, rest, ok := strings.Cut(s.url, "://")
	if !ok {
		return nil, usageError{fmt.Errorf("--storage %s: expected file:///path or s3://bucket/prefix", s.shown())}
	}
	switch scheme {
	case "file":
		u, err := url.Parse(s.url)
		if err != nil || u.Host != "" || u.Path == "" || !strings.HasPrefix(rest, "/") {
			return nil, usageError{fmt.Errorf("--storage %s: a file URL needs an absolute path, as in file:///var/lib/mysql-pitr", s.shown())}
		}
		if !create {
			st, err := file.Open(u.Path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("--storage %s: %w: the directory %s does not exist", s.shown(), catalog.ErrNoArchive, u.Path)
			}
			return st, err
		}
		st, err := file.New(u.Path)
		if err != nil {
			return nil, err
		}
		return st, nil
	case "s3":
		cfg, err := s3.ParseURL(s.url)
		if err != nil {
			return nil, usageError{err}
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
			return nil, usageError{fmt.Errorf("--s3-path-style %q: want true or false", s.pathStyle)}
		}
		if s.sse != "" {
			cfg.SSE = s.sse
		}
		if s.kmsKey != "" {
			cfg.SSEKMSKeyID = s.kmsKey
		}
		cfg.CAFile = s.caFile
		if err := cfg.Validate(); err != nil {
			return nil, usageError{err}
		}
		s.warnTLS(cfg)
		return s3.New(ctx, cfg)
	}
	if s.hidden() {
		return nil, usageError{fmt.Errorf("--storage %s: the scheme is not file or s3", s.shown())}
	}
	return nil, usageError{fmt.Errorf("--storage %q: unknown scheme %q (file or s3)", s.url, scheme)}
}

// hidden reports whether errors must not show the --storage value: with an
// '@' it may carry credentials (user:secret@host), which would then reach
// a log. The s3 package keeps them out of its own errors the same way.
func (s *storageFlags) hidden() bool { return strings.Contains(s.url, "@") }

// shown is the --storage value as an error may show it.
func (s *storageFlags) shown() string {
	if s.hidden() {
		return "(value not shown: it holds an @ and may carry credentials)"
	}
	return strconv.Quote(s.url)
}

// id is a short stable name for the archive location, for the spool's subdirectory.
func (s *storageFlags) id() string {
	u := s.url
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i]
	}
	h := sha256.Sum256([]byte(u))
	return hex.EncodeToString(h[:6])
}

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The no-leaked-secrets tests plant canaries (secrets made up for the
// test, with the encodings a leak could take) and look for them. This file
// holds the canaries and the scanner of bytes, files and directories;
// procwatch_test.go watches a command's processes, secretsrun_test.go runs
// commands under both, and secrets_test.go has the tests.

// canary is a secret planted for a test. Its patterns are the forms in
// which it could leak: the raw string, lowercased, hex (both cases), and
// base64 (standard and URL alphabets) at each of the three alignments it
// can have inside a larger encoded blob. Each pattern is the last
// patternLen bytes of its encoding: canaries end in random characters, so
// the tail is as unique as the whole, it also catches a leak that cuts the
// secret's start off, and a short pattern keeps scanning large files fast.
type canary struct {
	name     string
	value    string
	patterns []canaryPattern
}

type canaryPattern struct {
	encoding string
	b        []byte
}

// patternLen is the length of a canary's patterns.
const patternLen = 32

func newCanary(name, value string) canary {
	c := canary{name: name, value: value}
	add := func(enc, p string) {
		p = p[len(p)-min(len(p), patternLen):]
		for _, q := range c.patterns {
			if bytes.Equal(q.b, []byte(p)) {
				return
			}
		}
		c.patterns = append(c.patterns, canaryPattern{enc, []byte(p)})
	}
	add("raw", value)
	add("lowercase", strings.ToLower(value))
	add("hex", hex.EncodeToString([]byte(value)))
	add("HEX", strings.ToUpper(hex.EncodeToString([]byte(value))))
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for _, p := range base64Alignments(e.enc, value) {
			add(e.name, p)
		}
	}
	return c
}

// base64Alignments returns, for a value preceded by 0, 1 or 2 other bytes
// in a blob, the base64 characters that depend on the value's bytes alone.
func base64Alignments(enc *base64.Encoding, value string) []string {
	var out []string
	for k := range 3 {
		s := enc.EncodeToString(append(make([]byte, k), value...))
		from := 0
		if k > 0 {
			from = 4 // the first group mixes in the preceding bytes
		}
		to := (k + len(value)) / 3 * 4 // the last, partial group mixes in what follows
		if to-from >= 8 {
			out = append(out, s[from:to])
		}
	}
	return out
}

// leak is one hit of a canary.
type leak struct {
	canary, encoding, where string
}

func (l leak) String() string { return fmt.Sprintf("%s (%s) in %s", l.canary, l.encoding, l.where) }

// scanner finds canaries in bytes.
type scanner struct{ canaries []canary }

// find returns every canary in data, once per canary.
func (s *scanner) find(where string, data []byte) []leak {
	var out []leak
	for _, c := range s.canaries {
		for _, p := range c.patterns {
			if bytes.Contains(data, p.b) {
				out = append(out, leak{c.name, p.encoding, where})
				break
			}
		}
	}
	return out
}

// maxPattern is the longest pattern, the overlap a chunked file scan needs.
func (s *scanner) maxPattern() int {
	n := 0
	for _, c := range s.canaries {
		for _, p := range c.patterns {
			n = max(n, len(p.b))
		}
	}
	return n
}

// findFile scans a file of any size in chunks.
func (s *scanner) findFile(path string) ([]leak, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	overlap := s.maxPattern()
	buf := make([]byte, 4<<20)
	var out []leak
	seen := map[string]bool{}
	keep := 0
	for {
		n, err := io.ReadFull(f, buf[keep:])
		data := buf[:keep+n]
		for _, l := range s.find(path, data) {
			if !seen[l.canary] {
				seen[l.canary] = true
				out = append(out, l)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		keep = min(overlap, len(data))
		copy(buf, data[len(data)-keep:])
	}
}

// credentialFile reports whether a file is one a command writes on purpose
// to hand a password to a child tool: a MySQL option file (.cnf) of mode
// 0600 in which every canary sits on a password= line.
func (s *scanner) credentialFile(path string, mode fs.FileMode) bool {
	if mode.Perm() != 0o600 || filepath.Ext(path) != ".cnf" {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if len(s.find("", []byte(line))) > 0 && !strings.HasPrefix(strings.TrimSpace(line), "password=") {
			return false
		}
	}
	return true
}

// fileState is what a file scan remembers, to skip files that did not change.
type fileState struct {
	size  int64
	mtime time.Time
}

// dirScan scans every regular file under roots, skipping files already
// scanned unchanged. Credential files (see credentialFile) are listed
// apart instead of counted as leaks.
type dirScan struct {
	s           *scanner
	roots       []string
	mu          sync.Mutex
	done        map[string]fileState
	leaks       []leak
	credentials map[string]bool // credential files ever seen
}

func newDirScan(s *scanner, roots ...string) *dirScan {
	return &dirScan{s: s, roots: roots, done: map[string]fileState{}, credentials: map[string]bool{}}
}

// scan walks the roots once; it returns the credential files present now.
func (d *dirScan) scan(maxSize int64) (present []string) {
	for _, root := range d.roots {
		filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if err != nil || !e.Type().IsRegular() {
				return nil // vanished while walking, or not a file
			}
			fi, err := e.Info()
			if err != nil || (maxSize > 0 && fi.Size() > maxSize) {
				return nil
			}
			st := fileState{fi.Size(), fi.ModTime()}
			d.mu.Lock()
			old, ok := d.done[path]
			d.mu.Unlock()
			if ok && old == st {
				if d.isCredential(path) {
					present = append(present, path)
				}
				return nil
			}
			leaks, err := d.s.findFile(path)
			if err != nil {
				return nil // removed between the walk and the read
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			d.done[path] = st
			if len(leaks) > 0 && d.s.credentialFile(path, fi.Mode()) {
				d.credentials[path] = true
				present = append(present, path)
				return nil
			}
			for _, l := range leaks {
				l.where = fmt.Sprintf("file %s (mode %s)", path, fi.Mode().Perm())
				d.leaks = append(d.leaks, l)
			}
			return nil
		})
	}
	return present
}

func (d *dirScan) isCredential(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.credentials[path]
}

package physical

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// streamFormat is what a physical snapshot's stream holds; it is the middle of
// its parts' names, so that a restore tells the formats apart by the
// manifest alone.
type streamFormat string

// Formats.
const (
	// formatXbstream is mariadb-backup's or xtrabackup's xbstream, which the
	// tool's extractor (mbstream, xbstream) unpacks and the tool prepares.
	formatXbstream streamFormat = "xbstream"
	// formatTar is a POSIX tar of a directory that starts as a datadir as it
	// is (a finished MySQL clone): any tar unpacks it, nothing prepares it.
	formatTar streamFormat = "tar"
)

// partName is the name of the n-th (1-based) part of a stream of format f.
// Zero padding keeps List order equal to stream order.
func (f streamFormat) partName(n int) string { return fmt.Sprintf("backup-%06d.%s.zst", n, f) }

// xbstreamPart is the name of the n-th part of an xbstream.
func xbstreamPart(n int) string { return formatXbstream.partName(n) }

// NeedsTool reports whether restoring the physical snapshot m runs a
// backup tool and its extractor: mariadb-backup's and xtrabackup's streams
// need them, a MySQL clone's finished datadir does not. A manifest whose
// format is not known needs them, so that Restore is the one to refuse it.
func NeedsTool(m *catalog.Manifest) bool {
	f, err := formatOf(m)
	return err != nil || f != formatTar
}

// formatOf tells a physical snapshot's format by its parts' names.
func formatOf(m *catalog.Manifest) (streamFormat, error) {
	for _, f := range []streamFormat{formatXbstream, formatTar} {
		ok := true
		for i, o := range m.Objects {
			if o.Name != f.partName(i+1) {
				ok = false
				break
			}
		}
		if ok {
			return f, nil
		}
	}
	first := ""
	if len(m.Objects) > 0 {
		first = m.Objects[0].Name
	}
	return "", fmt.Errorf("snapshot %s: its parts (%s, …) are neither %s nor %s parts in order", m.ID, first, formatXbstream.partName(1), formatTar.partName(1))
}

// partWriter cuts the tool's xbstream output into parts of at most partSize
// uncompressed bytes, compressing each into its own object as it arrives.
// Concatenating the parts' uncompressed bytes gives the stream back. Bounded
// parts keep every object far below backend size limits, let a restore verify
// and fail at the first bad part rather than at the end of a terabyte, and
// give a future resumable upload something to resume at.
type partWriter struct {
	ctx      context.Context
	st       storage.Storage
	id       catalog.SnapshotID
	format   streamFormat
	partSize int64
	enc      *frameEncoder

	// The part being written; pw is nil between parts.
	n      int
	pw     *io.PipeWriter
	sum    hash.Hash
	size   int64
	result chan putResult

	// sealed are parts whose bytes are all written but whose Put may still
	// be storing them (a file store's fsync of a large part takes a while):
	// the stream goes on meanwhile, with at most maxPending such parts.
	sealed  []sealedPart
	objects []catalog.SnapshotObject
}

// maxPending bounds the parts whose Put is still finishing.
const maxPending = 1

type sealedPart struct {
	object catalog.SnapshotObject
	result chan putResult
}

type putResult struct {
	info storage.ObjectInfo
	err  error
}

func newPartWriter(ctx context.Context, st storage.Storage, id catalog.SnapshotID, format streamFormat, partSize int64, level zstd.EncoderLevel, concurrency int) (*partWriter, error) {
	enc, err := newFrameEncoder(level, concurrency)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &partWriter{ctx: ctx, st: st, id: id, format: format, partSize: partSize, enc: enc, sum: sha256.New()}, nil
}

// Write implements io.Writer.
func (p *partWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		if p.pw == nil {
			p.open()
		}
		chunk := b
		if room := p.partSize - p.size; int64(len(chunk)) > room {
			chunk = chunk[:room]
		}
		if _, err := p.enc.Write(chunk); err != nil {
			return written, p.fail(err)
		}
		p.sum.Write(chunk)
		p.size += int64(len(chunk))
		written += len(chunk)
		b = b[len(chunk):]
		if p.size == p.partSize {
			if err := p.seal(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// open starts the next part's Put, reading from a pipe the encoder writes to.
func (p *partWriter) open() {
	p.n++
	pr, pw := io.Pipe()
	p.pw, p.size = pw, 0
	p.sum.Reset()
	p.enc.Reset(pw)
	result := make(chan putResult, 1)
	p.result = result
	key := catalog.SnapshotObjectKey(p.id, p.format.partName(p.n))
	go func() {
		info, err := p.st.Put(p.ctx, key, pr, storage.PutOptions{IfNotExists: true})
		// Unblock the encoder if Put stopped reading early.
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.Close()
		}
		result <- putResult{info, err} // this part's channel: p.result moves on to the next part
	}()
}

// seal finishes the current part: flushes the zstd frame, ends the Put's input
// and waits for the object to be stored.
func (p *partWriter) seal() error {
	if err := p.enc.Close(); err != nil {
		return p.fail(err)
	}
	if err := p.pw.Close(); err != nil {
		return p.fail(err)
	}
	p.sealed = append(p.sealed, sealedPart{
		object: catalog.SnapshotObject{Name: p.format.partName(p.n), Size: p.size, SHA256: hex.EncodeToString(p.sum.Sum(nil))},
		result: p.result,
	})
	p.pw = nil
	return p.settle(maxPending)
}

// settle waits for sealed parts' Puts, oldest first, until at most keep remain.
func (p *partWriter) settle(keep int) error {
	for len(p.sealed) > keep {
		sp := p.sealed[0]
		p.sealed = p.sealed[1:]
		r := <-sp.result
		if r.err != nil {
			return r.err // the store's errors name the key
		}
		sp.object.StoredSize = r.info.Size
		p.objects = append(p.objects, sp.object)
	}
	return nil
}

// fail abandons the current part; its Put returns an error and stores nothing.
// The Put's own error, when it has one, is the better explanation.
func (p *partWriter) fail(cause error) error {
	var err error
	if p.pw != nil {
		p.pw.CloseWithError(cause)
		_ = p.enc.Close() // stops its goroutines; writes to the closed pipe fail
		r := <-p.result
		p.pw = nil
		err = r.err
	}
	for _, sp := range p.sealed {
		<-sp.result // parts already sealed finish, but are orphans now
	}
	p.sealed = nil
	if err != nil {
		return err
	}
	return cause
}

// Close seals the last part. A stream that never started is an error: a
// backup always holds data.
func (p *partWriter) Close() error {
	if p.pw != nil {
		if err := p.seal(); err != nil {
			return err
		}
	}
	if err := p.settle(0); err != nil {
		return p.fail(err)
	}
	if len(p.objects) == 0 {
		return errors.New("backup stream is empty")
	}
	return nil
}

// Abort abandons the current part, if any, after an error elsewhere.
func (p *partWriter) Abort(cause error) {
	_ = p.fail(cause)
}

// toolLogTail bounds what is kept of the tool's stderr for error messages:
// it logs one line per copied file, which for a big server is megabytes.
const (
	toolLogTailLines = 40
	toolLogLineMax   = 1024
)

// toolLog reads the backup tool's log as it is written, keeping its tail
// and the facts the manifest needs. Stage lines are timestamped on arrival:
// the tool's own timestamps have one-second resolution, too coarse for a lock
// held a few milliseconds. The tool writes stderr unbuffered, so arrival time
// is when the tool reached the stage, within scheduling noise.
type toolLog struct {
	mu   sync.Mutex
	tail []string

	// Binlog coordinates from "MySQL binlog position: ..."; found reports
	// the line was seen. gtidOpen is set while a multi-line GTID set (MySQL
	// prints one UUID per line) is still being read.
	found    bool
	pos      catalog.Position
	gtid     string
	gtidOpen bool

	// Lock timing: commitsBlocked is when commits stopped (BACKUP STAGE
	// BLOCK_COMMIT or FLUSH TABLES WITH READ LOCK), ddlBlocked when DDL and
	// writes to non-transactional tables in use stopped (BACKUP STAGE
	// BLOCK_DDL), unlocked when both resumed.
	commitsBlocked, ddlBlocked, unlocked time.Time

	completed bool
}

// MariaDB 10.11 prints, once BLOCK_COMMIT has frozen the binlog:
//
//	[00] 2026-11-27 12:16:35 MySQL binlog position: filename 'mysql-bin.000002', position '1645', GTID of the last change '0-7-7'
//
// The GTID part is missing when the server has no GTID state, and for MySQL
// the set may continue on following lines, one UUID each.
var binlogLine = regexp.MustCompile(`MySQL binlog position: filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)('?))?`)

// lockMarks are the lines around the lock phases. MariaDB 10.4+ uses
// BACKUP STAGE; "Acquiring BACKUP LOCKS" is printed at BACKUP STAGE START,
// which blocks nothing, so it is not a mark. Older MariaDB and xtrabackup
// without backup locks use FLUSH TABLES WITH READ LOCK.
var lockMarks = []struct {
	text string
	kind int
}{
	{"Starting BACKUP STAGE BLOCK_COMMIT", markCommit},
	{"Executing FLUSH TABLES WITH READ LOCK", markCommit},
	{"Started BACKUP STAGE BLOCK_DDL", markDDL},
	{"Starting BACKUP STAGE BLOCK_DDL", markDDL},
	{"All tables unlocked", markUnlock},
	{"completed OK!", markDone},
}

const (
	markCommit = iota + 1
	markDDL
	markUnlock
	markDone
)

// line digests one line that arrived at t.
func (s *toolLog) line(t time.Time, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line = redactGrants(line)
	if len(line) > toolLogLineMax {
		line = line[:toolLogLineMax] + "…"
	}
	if len(s.tail) == toolLogTailLines {
		copy(s.tail, s.tail[1:])
		s.tail = s.tail[:len(s.tail)-1]
	}
	s.tail = append(s.tail, line)

	if s.gtidOpen {
		part, _, closed := strings.Cut(line, "'")
		s.gtid += strings.TrimSpace(part)
		s.gtidOpen = !closed
		return
	}
	if m := binlogLine.FindStringSubmatch(line); m != nil {
		pos, err := strconv.ParseUint(m[2], 10, 64)
		if err == nil {
			s.found = true
			s.pos = catalog.Position{File: m[1], Pos: pos}
			s.gtid = strings.TrimSpace(m[3])
			s.gtidOpen = strings.Contains(line, "GTID of the last change '") && m[4] == ""
		}
		return
	}
	for _, mk := range lockMarks {
		if !strings.Contains(line, mk.text) {
			continue
		}
		switch mk.kind {
		case markCommit:
			if s.commitsBlocked.IsZero() {
				s.commitsBlocked = t
			}
		case markDDL:
			if s.ddlBlocked.IsZero() {
				s.ddlBlocked = t
			}
		case markUnlock:
			s.unlocked = t
		case markDone:
			s.completed = true
		}
		return
	}
}

// identifiedBy matches the credential a SHOW GRANTS line carries, which
// mariadb-backup prints when it finds the account's privileges lacking.
var identifiedBy = regexp.MustCompile(`(?i)(IDENTIFIED\s+(?:BY|VIA|WITH)\s+(?:PASSWORD\s+)?(?:\w+\s+(?:AS|USING)\s+)?)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)`)

// redactGrants replaces password hashes and authentication strings in a
// line of the tool's log: they must not reach our errors and logs.
func redactGrants(line string) string {
	return identifiedBy.ReplaceAllString(line, "${1}<redacted>")
}

// consume reads r line by line until EOF.
func (s *toolLog) consume(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			s.line(time.Now(), strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// Tail returns the last lines, for error messages.
func (s *toolLog) Tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

// lockTimes are the lock windows measured from the tool's log.
type lockTimes struct {
	// Commits is how long commits were blocked: BLOCK_COMMIT (or FTWRL)
	// until "All tables unlocked".
	Commits time.Duration
	// DDL is how long DDL and writes to in-use non-transactional tables
	// were blocked: BLOCK_DDL until "All tables unlocked". It includes
	// Commits.
	DDL time.Duration
	// Seen reports that the log had the marks; false with --no-lock.
	Seen bool
	// Unlocked is when the tool reported releasing its locks (on this
	// machine's clock): every transaction the backup holds committed before.
	Unlocked time.Time
}

// locks returns the lock windows; end stands in for a missing unlock line.
func (s *toolLog) locks(end time.Time) lockTimes {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlocked := s.unlocked
	if unlocked.IsZero() {
		unlocked = end
	}
	lt := lockTimes{Unlocked: unlocked}
	if !s.commitsBlocked.IsZero() {
		lt.Seen = true
		lt.Commits = max(unlocked.Sub(s.commitsBlocked), 0)
	}
	if !s.ddlBlocked.IsZero() {
		lt.DDL = max(unlocked.Sub(s.ddlBlocked), 0)
	}
	return lt
}

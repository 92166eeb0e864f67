package binlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// Spool is the local directory where sealed segments wait for upload. Every
// segment passes through it, so a segment survives an agent restart and
// storage outages up to the spool's size limit; the streamer stops reading
// from the server while the spool is full.
//
// File names are the segments' catalog keys with "/" replaced by "~", so the
// directory sorts in archive order; data files hold the binlog bytes
// uncompressed (suffix .binlog). A segment is sealed once its record file
// exists; data files without a record are the remains of a crash and are
// removed on open.
type Spool struct {
	dir  string
	max  int64
	lock *SpoolLock

	mu   sync.Mutex
	used int64
	// space is signalled when usage drops.
	space chan struct{}

	// fault, when set (by tests), is called before each file operation
	// the spool makes; an error it returns is the operation's.
	fault func(op SpoolOp) error
}

// SpoolOp names a file operation of the spool, for fault injection.
type SpoolOp string

// The spool's file operations.
const (
	OpCreate SpoolOp = "create" // a segment's file is created
	OpWrite  SpoolOp = "write"  // bytes are written to a segment's file
	OpSync   SpoolOp = "fsync"  // a segment's file is fsynced
	OpRename SpoolOp = "rename" // a sealed segment's file is renamed into place
	OpRecord SpoolOp = "record" // a record file is written (written, fsynced, renamed, directory fsynced)
	OpRead   SpoolOp = "read"   // a sealed segment is read for upload
)

func (s *Spool) check(op SpoolOp) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(op)
}

const (
	// tailName keeps the archive's end as last uploaded from this spool.
	tailName = "archive-tail.json"
	// lockName is the file the spool's owner holds an flock on; ownerName
	// says who that is.
	lockName    = ".lock"
	ownerName   = "owner.json"
	spoolSep    = "~"
	partialGlob = ".partial-*"
	partialPfx  = ".partial-"
	// tmpPfx names the temporary file of a small file written atomically
	// (records, the tail, the owner): unlike a segment's partial file, one
	// may be in flight from the uploader while the streamer restarts.
	tmpPfx       = ".tmp-"
	recordSuffix = ".json"
	dataSuffix   = ".binlog"
)

// dataName is the spool file of a segment's data.
func dataName(rec *catalog.Segment) string {
	return strings.TrimSuffix(spoolName(rec.Ref().RecordKey()), recordSuffix) + dataSuffix
}

// ErrSpoolBusy is returned when another agent holds the spool directory.
var ErrSpoolBusy = errors.New("spool directory is in use by another agent")

// SpoolLock is a spool directory held by this process: an flock on
// DIR/.lock, which the kernel releases when the process ends, however it
// ends. Nothing else in the directory is touched until Open.
type SpoolLock struct {
	dir  string
	f    *os.File
	prev SpoolOwner
}

// SpoolOwner is who last opened a spool.
type SpoolOwner struct {
	Session string    `json:"session"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Since   time.Time `json:"since"`
	// Gens are the writer generations the owner claimed, oldest first.
	Gens []catalog.Generation `json:"gens,omitempty"`
}

// LockSpool creates the spool directory if needed and locks it. It fails
// with ErrSpoolBusy, naming the holder, when another process holds it.
func LockSpool(dir string) (*SpoolLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create spool %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock spool %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			owner, _ := readOwner(dir)
			return nil, fmt.Errorf("%w: %s is held by pid %d on %s (session %s, since %s); give each agent its own --spool-dir",
				ErrSpoolBusy, dir, owner.PID, owner.Host, owner.Session, owner.Since.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("lock spool %s: %w", dir, err)
	}
	l := &SpoolLock{dir: dir, f: f}
	l.prev, err = readOwner(dir)
	if err != nil {
		l.Release()
		return nil, err
	}
	return l, nil
}

func readOwner(dir string) (SpoolOwner, error) {
	var o SpoolOwner
	b, err := os.ReadFile(filepath.Join(dir, ownerName))
	if errors.Is(err, os.ErrNotExist) {
		return o, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &o)
	}
	if err != nil {
		return SpoolOwner{}, fmt.Errorf("read spool owner %s: %w", filepath.Join(dir, ownerName), err)
	}
	return o, nil
}

// Previous is who held the spool before this process: the agent whose
// lease, if still in storage under the same session, is provably dead.
func (l *SpoolLock) Previous() SpoolOwner { return l.prev }

// Release unlocks the spool.
func (l *SpoolLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	return err
}

// Open takes the locked spool into use for session, limited to max bytes:
// it records the owner and removes what a crash left half written.
func (l *SpoolLock) Open(max int64, session string) (*Spool, error) {
	s := &Spool{dir: l.dir, max: max, space: make(chan struct{}, 1), lock: l}
	host, _ := os.Hostname()
	// The generations this spool wrote under stay: a restarted agent tells
	// its own segments in the archive by them.
	if err := s.writeOwner(SpoolOwner{Session: session, PID: os.Getpid(), Host: host, Since: time.Now().UTC(), Gens: l.prev.Gens}); err != nil {
		return nil, err
	}
	if err := s.sweep(true); err != nil {
		return nil, err
	}
	return s, nil
}

// OpenSpool locks and opens a spool directory (creating it if needed)
// limited to max bytes, for a new session.
func OpenSpool(dir string, max int64) (*Spool, error) {
	l, err := LockSpool(dir)
	if err != nil {
		return nil, err
	}
	s, err := l.Open(max, catalog.NewSession())
	if err != nil {
		l.Release()
		return nil, err
	}
	return s, nil
}

// Close releases the spool's lock.
func (s *Spool) Close() error { return s.lock.Release() }

// sweep seals the partial segments a writer made durable (see
// recoverPartials), removes other unsealed segments and data whose record
// was never written, and counts what the spool holds. At open it also removes the temporary
// files of atomic writes a crash left; at a restart of the stream it
// leaves them, as the uploader may be writing one.
func (s *Spool) sweep(atOpen bool) error {
	if err := s.recoverPartials(); err != nil {
		return err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read spool %s: %w", s.dir, err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var used int64
	for _, e := range ents {
		name := e.Name()
		p := filepath.Join(s.dir, name)
		switch {
		case name == tailName || name == lockName || name == ownerName:
		case strings.HasPrefix(name, partialPfx):
			_ = os.Remove(p) // an unsealed segment: the stream resumes before it
		case strings.HasPrefix(name, tmpPfx):
			if atOpen {
				_ = os.Remove(p) // an atomic write a crash interrupted
			}
		case strings.HasSuffix(name, dataSuffix) && !names[strings.TrimSuffix(name, dataSuffix)+recordSuffix]:
			_ = os.Remove(p) // data whose record was never written
		default:
			if fi, err := e.Info(); err == nil {
				used += fi.Size()
			}
		}
	}
	s.mu.Lock()
	s.used = used
	s.mu.Unlock()
	return nil
}

// Owner returns who holds the spool.
func (s *Spool) Owner() (SpoolOwner, error) { return readOwner(s.dir) }

func (s *Spool) writeOwner(o SpoolOwner) error {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return fmt.Errorf("encode spool owner: %w", err)
	}
	return s.writeAtomic(ownerName, b)
}

// addGen records a writer generation the owner claimed.
func (s *Spool) addGen(g catalog.Generation) error {
	o, err := s.Owner()
	if err != nil {
		return err
	}
	o.Gens = append(o.Gens, g)
	if len(o.Gens) > 64 {
		o.Gens = o.Gens[len(o.Gens)-64:]
	}
	return s.writeOwner(o)
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Used returns the bytes the spool holds.
func (s *Spool) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Drained reports whether the spool has room again after being full: it is
// at most half full, so that a paused stream does not stop and start at
// every segment.
func (s *Spool) Drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max <= 0 || s.used <= s.max/2
}

// Full reports whether adding n more bytes would exceed the limit.
func (s *Spool) Full(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max > 0 && s.used+n > s.max
}

// Space returns a channel that receives when the spool shrinks.
func (s *Spool) Space() <-chan struct{} { return s.space }

func (s *Spool) add(n int64) {
	s.mu.Lock()
	s.used += n
	s.mu.Unlock()
	if n < 0 {
		select {
		case s.space <- struct{}{}:
		default:
		}
	}
}

func spoolName(key string) string { return strings.ReplaceAll(key, "/", spoolSep) }

func keyOf(name string) string { return strings.ReplaceAll(name, spoolSep, "/") }

// spoolFile is a segment's file being written.
type spoolFile struct {
	*os.File
	s *Spool
}

func (f spoolFile) Write(p []byte) (int, error) {
	if err := f.s.check(OpWrite); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f spoolFile) Sync() error {
	if err := f.s.check(OpSync); err != nil {
		return err
	}
	return f.File.Sync()
}

// createPartial creates a file for a segment being written.
func (s *Spool) createPartial() (spoolFile, error) {
	if err := s.check(OpCreate); err != nil {
		return spoolFile{}, fmt.Errorf("create spool file: %w", err)
	}
	f, err := os.CreateTemp(s.dir, partialPfx)
	if err != nil {
		return spoolFile{}, fmt.Errorf("create spool file: %w", err)
	}
	return spoolFile{File: f, s: s}, nil
}

// Seal makes the partial file the sealed data of rec and writes rec beside
// it. The partial file must be closed. Both are fsynced before the record
// is renamed into place. keep leaves the partial file where it is (a
// second name of the data) for the caller to remove once Seal returned:
// until the record exists, the partial file is what a crash recovers from.
func (s *Spool) Seal(partial string, rec *catalog.Segment, keep bool) error {
	ref := rec.Ref()
	data := filepath.Join(s.dir, dataName(rec))
	if err := s.check(OpRename); err != nil {
		return fmt.Errorf("seal spool segment: %w", err)
	}
	place := os.Rename
	if keep {
		place = os.Link
		_ = os.Remove(data) // the remains of an earlier attempt
	}
	if err := place(partial, data); err != nil {
		return fmt.Errorf("seal spool segment: %w", err)
	}
	fi, err := os.Stat(data)
	if err != nil {
		return fmt.Errorf("seal spool segment: %w", err)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode segment record: %w", err)
	}
	if err := s.writeAtomic(spoolName(ref.RecordKey()), b); err != nil {
		return err
	}
	s.add(fi.Size() + int64(len(b)))
	return nil
}

// PutTimeline queues a timeline record for upload.
func (s *Spool) PutTimeline(tl *catalog.Timeline) error {
	b, err := json.MarshalIndent(tl, "", "  ")
	if err != nil {
		return fmt.Errorf("encode timeline record: %w", err)
	}
	if err := s.writeAtomic(spoolName(catalog.TimelineKey(tl.ID)), b); err != nil {
		return err
	}
	s.add(int64(len(b)))
	return nil
}

func (s *Spool) writeAtomic(name string, b []byte) error {
	if err := s.check(OpRecord); err != nil {
		return fmt.Errorf("write spool %s: %w", name, err)
	}
	f, err := os.CreateTemp(s.dir, tmpPfx)
	if err != nil {
		return fmt.Errorf("write spool %s: %w", name, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(s.dir, name))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write spool %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Pending lists what waits for upload: timeline records first, then sealed
// segments in archive order.
type Pending struct {
	Timelines []*catalog.Timeline
	Segments  []*catalog.Segment
}

// Pending returns the spool's sealed content.
func (s *Spool) Pending() (Pending, error) {
	var p Pending
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return p, fmt.Errorf("read spool: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, recordSuffix) || strings.HasPrefix(name, ".") {
			continue
		}
		key := keyOf(name)
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return p, fmt.Errorf("read spool %s: %w", name, err)
		}
		if _, err := catalog.ParseTimelineKey(key); err == nil {
			var tl catalog.Timeline
			if err := json.Unmarshal(b, &tl); err != nil {
				return p, fmt.Errorf("decode spool %s: %w", name, err)
			}
			p.Timelines = append(p.Timelines, &tl)
			continue
		}
		if _, isRec, err := catalog.ParseSegmentKey(key); err == nil && isRec {
			var seg catalog.Segment
			if err := json.Unmarshal(b, &seg); err != nil {
				return p, fmt.Errorf("decode spool %s: %w", name, err)
			}
			p.Segments = append(p.Segments, &seg)
		}
	}
	sort.Slice(p.Timelines, func(i, j int) bool { return p.Timelines[i].ID < p.Timelines[j].ID })
	sort.SliceStable(p.Segments, func(i, j int) bool {
		a, b := p.Segments[i], p.Segments[j]
		if a.Timeline != b.Timeline {
			return a.Timeline < b.Timeline
		}
		if a.FileNum != b.FileNum {
			return a.FileNum < b.FileNum
		}
		return a.Start < b.Start
	})
	return p, nil
}

// DataPath returns the local path of a sealed segment's data.
func (s *Spool) DataPath(rec *catalog.Segment) string {
	return filepath.Join(s.dir, dataName(rec))
}

// RemoveSegment deletes an uploaded segment from the spool.
func (s *Spool) RemoveSegment(rec *catalog.Segment) error {
	return s.remove(spoolName(rec.Ref().RecordKey()), dataName(rec))
}

// RemoveTimeline deletes an uploaded timeline record from the spool.
func (s *Spool) RemoveTimeline(id catalog.TimelineID) error {
	return s.remove(spoolName(catalog.TimelineKey(id)))
}

// remove deletes files in the order given (record first, so that a crash
// between leaves data without a record, which OpenSpool collects).
func (s *Spool) remove(names ...string) error {
	var freed int64
	for _, n := range names {
		p := filepath.Join(s.dir, n)
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("remove spool %s: %w", n, err)
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove spool %s: %w", n, err)
		}
		freed += fi.Size()
	}
	s.add(-freed)
	return nil
}

// Tail is the archive's end as this spool last uploaded it: the newest
// timeline's record and that timeline's last segment. An agent that cannot
// decrypt the archive (it holds only the public recipients) resumes from it.
type Tail struct {
	Timeline *catalog.Timeline `json:"timeline,omitempty"`
	Segment  *catalog.Segment  `json:"segment,omitempty"`
}

// Tail returns the stored tail; both fields are nil when there is none.
func (s *Spool) Tail() (Tail, error) {
	var t Tail
	b, err := os.ReadFile(filepath.Join(s.dir, tailName))
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return t, fmt.Errorf("read spool %s: %w", tailName, err)
	}
	if err := json.Unmarshal(b, &t); err != nil {
		return Tail{}, fmt.Errorf("decode spool %s: %w", tailName, err)
	}
	return t, nil
}

// uploadedTimeline records that tl's record is in storage.
func (s *Spool) uploadedTimeline(tl *catalog.Timeline) error {
	t, err := s.Tail()
	if err != nil {
		return err
	}
	if t.Timeline != nil && t.Timeline.ID > tl.ID {
		return nil
	}
	if t.Timeline == nil || t.Timeline.ID != tl.ID {
		t.Segment = nil
	}
	t.Timeline = tl
	return s.writeTail(t)
}

// uploadedSegment records that seg and its record are in storage.
func (s *Spool) uploadedSegment(seg *catalog.Segment) error {
	t, err := s.Tail()
	if err != nil {
		return err
	}
	switch {
	case t.Timeline != nil && t.Timeline.ID > seg.Timeline, t.Segment != nil && t.Segment.Timeline > seg.Timeline:
		return nil // an older timeline's backlog: the tail is further on
	case t.Timeline != nil && t.Timeline.ID != seg.Timeline:
		// The timeline's record was uploaded from elsewhere: keep the
		// segment only (its timeline's record stays unknown here).
		t.Timeline = nil
	}
	t.Segment = seg
	return s.writeTail(t)
}

func (s *Spool) writeTail(t Tail) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode spool tail: %w", err)
	}
	return s.writeAtomic(tailName, b)
}

package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/crypt"
)

// Writer generations fence the archive against a writer that no longer owns
// it (one cut off from storage longer than its lease, say, while another
// agent took over).
//
// Every writer that takes the archive over claims the next generation with a
// create-only put of generations/<gen>.json: of two writers claiming the same
// number exactly one wins. It claims generation g+1 only after reading g as
// the newest and reading where the archive ends, so the claim also proves
// that nobody claimed anything in between. That end is the generation's
// fence, stored in the key of a second object (FenceKey), so that readers and
// writers holding only the archive's public age recipients can apply it from
// a listing alone.
//
// Everything a writer stores under binlog/ carries its generation in its key.
// An object of generation h that reaches past the fence of any later
// generation was stored after that generation took over, by a writer that
// had lost the archive: readers leave it out (it is superseded), and the
// archive stays one chain. A writer checks before every index record it puts
// that no later generation is claimed, so a superseded writer stops at its
// next segment.
//
// A writer that is about to delete objects (compaction) first claims a new
// generation of its own, fenced at its exact end (a checkpoint): if that
// fails, another writer took over, and nothing is deleted.

// GenerationPrefix is the prefix of the generation claims and fences.
const GenerationPrefix = "generations/"

const fenceMark = "-fence-"

// ErrFenced is returned when a later writer generation has taken the archive
// over: this writer must stop writing.
var ErrFenced = errors.New("another writer has taken the archive over")

// Generation numbers the writers of an archive, in the order they took it
// over. Objects written before generations existed have generation 0.
type Generation uint64

// String formats the generation as it appears in keys.
func (g Generation) String() string { return fmt.Sprintf("%010d", uint64(g)) }

// maxGeneration is the widest generation a key holds.
const maxGeneration Generation = 9_999_999_999

// ArchivePos is a place in the archive, in archive order: timeline, then
// binlog file number, then byte offset.
type ArchivePos struct {
	Timeline TimelineID `json:"timeline"`
	FileNum  uint64     `json:"file_num"`
	Pos      uint64     `json:"pos"`
}

// Compare orders two archive positions; it returns -1, 0 or +1.
func (p ArchivePos) Compare(q ArchivePos) int {
	switch {
	case p.Timeline != q.Timeline:
		return cmp3(uint64(p.Timeline), uint64(q.Timeline))
	case p.FileNum != q.FileNum:
		return cmp3(p.FileNum, q.FileNum)
	}
	return cmp3(p.Pos, q.Pos)
}

func cmp3(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// String describes the position for messages.
func (p ArchivePos) String() string {
	if p.FileNum == 0 && p.Pos == 0 {
		return fmt.Sprintf("the start of timeline %d", uint32(p.Timeline))
	}
	return fmt.Sprintf("timeline %d, binlog file #%d at %d", uint32(p.Timeline), p.FileNum, p.Pos)
}

// EndPos is where the segment reaches in the archive.
func (r SegmentRef) EndPos() ArchivePos {
	return ArchivePos{Timeline: r.Timeline, FileNum: r.FileNum, Pos: r.End}
}

// TimelineStartPos is where a timeline's record reaches: the timeline's
// beginning, before any of its segments.
func TimelineStartPos(tl TimelineID) ArchivePos { return ArchivePos{Timeline: tl} }

// GenerationRecord is the content of a generation's claim.
type GenerationRecord struct {
	Gen Generation `json:"gen"`
	// Fence is where the archive ended when this generation took it over.
	Fence ArchivePos `json:"fence"`
	// Reason is "acquired" for a writer taking the archive over, or
	// "checkpoint" for a writer confirming that it still owns it.
	Reason  string    `json:"reason"`
	Holder  string    `json:"holder,omitempty"`
	Session string    `json:"session,omitempty"`
	Host    string    `json:"host,omitempty"`
	PID     int       `json:"pid,omitempty"`
	Created time.Time `json:"created"`
}

// Reasons a generation is claimed.
const (
	GenerationAcquired   = "acquired"
	GenerationCheckpoint = "checkpoint"
)

// GenerationKey is the key of a generation's claim.
func GenerationKey(g Generation) string { return GenerationPrefix + g.String() + segmentRecord }

// FenceKey is the key of a generation's fence.
func FenceKey(g Generation, f ArchivePos) string {
	return fmt.Sprintf("%s%s%s%06d-%010d-%012d%s", GenerationPrefix, g, fenceMark, uint32(f.Timeline), f.FileNum, f.Pos, segmentRecord)
}

// ParseGenerationKey parses a claim key (fence nil) or a fence key.
func ParseGenerationKey(key string) (Generation, *ArchivePos, error) {
	bad := fmt.Errorf("%w: %q", ErrBadKey, key)
	rest, ok := strings.CutPrefix(key, GenerationPrefix)
	if !ok {
		return 0, nil, bad
	}
	rest, ok = strings.CutSuffix(rest, segmentRecord)
	if !ok {
		return 0, nil, bad
	}
	genStr, fenceStr, isFence := strings.Cut(rest, fenceMark)
	if len(genStr) != genWidth || !allDigits(genStr) {
		return 0, nil, bad
	}
	n, err := strconv.ParseUint(genStr, 10, 64)
	if err != nil || n == 0 {
		return 0, nil, bad
	}
	if !isFence {
		return Generation(n), nil, nil
	}
	parts := strings.Split(fenceStr, "-")
	if len(parts) != 3 || len(parts[0]) != 6 || len(parts[1]) != 10 || len(parts[2]) != 12 {
		return 0, nil, bad
	}
	var nums [3]uint64
	for i, p := range parts {
		if !allDigits(p) {
			return 0, nil, bad
		}
		nums[i], _ = strconv.ParseUint(p, 10, 64)
	}
	return Generation(n), &ArchivePos{Timeline: TimelineID(nums[0]), FileNum: nums[1], Pos: nums[2]}, nil
}

// Generations is what an archive's generation keys say.
type Generations struct {
	// Newest is the highest claimed generation (0 when none is).
	Newest Generation
	// fences are the generations with a fence, ascending; minAfter[i] is
	// the lowest fence among fences[i:].
	fences   []genFence
	minAfter []ArchivePos
}

type genFence struct {
	gen   Generation
	fence ArchivePos
}

// ReadGenerations builds Generations from a listing of generations/ (or of
// the whole store: other keys are skipped). Keys under generations/ that do
// not parse are returned as issues.
func ReadGenerations(objs []storage.ObjectInfo) (Generations, []Issue) {
	var gs Generations
	var issues []Issue
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, GenerationPrefix) {
			continue
		}
		g, f, err := ParseGenerationKey(o.Key)
		if err != nil {
			issues = append(issues, Issue{Key: o.Key, Kind: IssueForeign, Detail: "the key does not parse as this archive's layout"})
			continue
		}
		gs.Newest = max(gs.Newest, g)
		if f != nil {
			gs.fences = append(gs.fences, genFence{gen: g, fence: *f})
		}
	}
	slices.SortFunc(gs.fences, func(a, b genFence) int {
		if c := cmp3(uint64(a.gen), uint64(b.gen)); c != 0 {
			return c
		}
		return a.fence.Compare(b.fence)
	})
	gs.minAfter = make([]ArchivePos, len(gs.fences))
	for i := len(gs.fences) - 1; i >= 0; i-- {
		gs.minAfter[i] = gs.fences[i].fence
		if i+1 < len(gs.fences) && gs.minAfter[i+1].Compare(gs.minAfter[i]) < 0 {
			gs.minAfter[i] = gs.minAfter[i+1]
		}
	}
	return gs, issues
}

// LoadGenerations lists the archive's generations.
func LoadGenerations(ctx context.Context, st storage.Storage) (Generations, error) {
	objs, err := st.List(ctx, GenerationPrefix)
	if err != nil {
		return Generations{}, fmt.Errorf("list %s: %w", GenerationPrefix, err)
	}
	gs, _ := ReadGenerations(objs)
	return gs, nil
}

// Superseded reports whether an object that generation gen stored, reaching
// up to end, was stored after a later generation took the archive over at a
// fence before end. It returns the earliest such generation's fence.
func (gs Generations) Superseded(gen Generation, end ArchivePos) (Generation, ArchivePos, bool) {
	i, _ := slices.BinarySearchFunc(gs.fences, gen+1, func(f genFence, g Generation) int { return cmp3(uint64(f.gen), uint64(g)) })
	if i >= len(gs.fences) || end.Compare(gs.minAfter[i]) <= 0 {
		return 0, ArchivePos{}, false
	}
	for _, f := range gs.fences[i:] {
		if end.Compare(f.fence) > 0 {
			return f.gen, f.fence, true
		}
	}
	return 0, ArchivePos{}, false
}

// Claim is a prepared claim of a writer generation. Its bytes are fixed
// when it is prepared, so that a retried Put recognises its own earlier
// attempt (one whose answer was lost) by the stored object's size and
// CRC32C, without reading it back: a writer holding only the archive's
// public recipients cannot read anything back, and every encryption of
// the same record differs.
type Claim struct {
	rec     GenerationRecord
	st      storage.Storage // where the sealed bytes go
	claim   []byte
	fence   []byte
	claimed bool
}

// PrepareClaim prepares the claim of rec.Gen, which must be one past the
// newest generation its caller read, fenced at rec.Fence.
func PrepareClaim(st storage.Storage, rec GenerationRecord) (*Claim, error) {
	if rec.Gen == 0 || rec.Gen > maxGeneration {
		return nil, fmt.Errorf("claim generation %d: out of range", rec.Gen)
	}
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	if rec.Host == "" {
		rec.Host, _ = os.Hostname()
	}
	if rec.PID == 0 {
		rec.PID = os.Getpid()
	}
	c := &Claim{rec: rec, st: st}
	var err error
	if c.claim, err = c.seal(st, GenerationKey(rec.Gen)); err != nil {
		return nil, err
	}
	if c.fence, err = c.seal(st, FenceKey(rec.Gen, rec.Fence)); err != nil {
		return nil, err
	}
	if cs, ok := st.(*crypt.Storage); ok {
		c.st = cs.Inner()
	}
	return c, nil
}

func (c *Claim) seal(st storage.Storage, key string) ([]byte, error) {
	b, err := json.MarshalIndent(&c.rec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", key, err)
	}
	b = append(b, '\n')
	if cs, ok := st.(*crypt.Storage); ok {
		return cs.Seal(key, b)
	}
	return b, nil
}

// Record returns what the claim stores.
func (c *Claim) Record() GenerationRecord { return c.rec }

// Put stores the claim, then the fence. It fails with an error wrapping
// ErrFenced when another writer claimed the generation first; any other
// error may be retried with the same Claim.
func (c *Claim) Put(ctx context.Context) error {
	if !c.claimed {
		err := c.putOwned(ctx, GenerationKey(c.rec.Gen), c.claim)
		if errors.Is(err, storage.ErrExist) {
			return fmt.Errorf("%w: generation %d was claimed by another writer first", ErrFenced, c.rec.Gen)
		}
		if err != nil {
			return fmt.Errorf("claim generation %d: %w", c.rec.Gen, err)
		}
		c.claimed = true // only the fence is left
	}
	// Only the claim's winner writes the fence.
	if err := c.putOwned(ctx, FenceKey(c.rec.Gen, c.rec.Fence), c.fence); err != nil {
		return fmt.Errorf("fence generation %d: %w", c.rec.Gen, err)
	}
	return nil
}

// putOwned puts b create-only under key; a key already holding exactly b
// (by size and CRC32C) is this claim's own earlier put.
func (c *Claim) putOwned(ctx context.Context, key string, b []byte) error {
	_, err := c.st.Put(ctx, key, bytes.NewReader(b), storage.PutOptions{IfNotExists: true})
	if !errors.Is(err, storage.ErrExist) {
		return err
	}
	have, serr := c.st.Stat(ctx, key)
	if serr != nil {
		return errors.Join(err, serr)
	}
	if have.Size == int64(len(b)) && have.CRC32C != 0 && have.CRC32C == crc32.Checksum(b, castagnoli) {
		return nil
	}
	return err
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ClaimGeneration prepares a claim and puts it once (see Claim).
func ClaimGeneration(ctx context.Context, st storage.Storage, rec GenerationRecord) error {
	c, err := PrepareClaim(st, rec)
	if err != nil {
		return err
	}
	return c.Put(ctx)
}

// CheckGeneration returns an error wrapping ErrFenced when a generation
// after gen has been claimed.
func CheckGeneration(ctx context.Context, st storage.Storage, gen Generation) error {
	_, err := st.Stat(ctx, GenerationKey(gen+1))
	switch {
	case err == nil:
		return fmt.Errorf("%w: writer generation %d was claimed after this writer's %d", ErrFenced, gen+1, gen)
	case errors.Is(err, storage.ErrNotExist):
		return nil
	}
	return fmt.Errorf("check writer generation: %w", err)
}

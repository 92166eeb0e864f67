package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrBadGTID is wrapped by errors about GTIDs and GTID sets that do not parse.
var ErrBadGTID = errors.New("not a GTID")

// GTID is a transaction's global id in either flavor's notation: MariaDB's
// domain-server-seq, or MySQL's uuid:seq (uuid:tag:seq for tagged GTIDs).
type GTID struct {
	// MySQL is set for uuid:seq GTIDs.
	MySQL bool
	// Domain and Server are MariaDB's.
	Domain uint32
	Server uint32
	// UUID and Tag are MySQL's (UUID in its canonical lower-case form).
	UUID string
	Tag  string
	Seq  uint64
}

// ParseGTID parses one GTID: "0-1-1041" or "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
// (or "…:tag:23", MySQL 8.4+). A MySQL GNO runs from 1 to 2^63-2; uuid and
// tag are read in either case and kept in lower case, as MySQL keeps them.
func ParseGTID(s string) (GTID, error) {
	bad := func() (GTID, error) { return GTID{}, fmt.Errorf("%w: %q", ErrBadGTID, s) }
	s = strings.TrimSpace(s)
	if strings.Contains(s, ":") {
		parts := strings.Split(s, ":")
		if len(parts) < 2 || len(parts) > 3 || !isUUID(parts[0]) {
			return bad()
		}
		seq, err := strconv.ParseUint(parts[len(parts)-1], 10, 64)
		if err != nil || seq == 0 || seq > maxGNO {
			return bad()
		}
		g := GTID{MySQL: true, UUID: strings.ToLower(parts[0]), Seq: seq}
		if len(parts) == 3 {
			if !ValidTag(parts[1]) {
				return bad()
			}
			g.Tag = strings.ToLower(parts[1])
		}
		return g, nil
	}
	parts := strings.Split(s, "-")
	if len(parts) != 3 {
		return bad()
	}
	var n [3]uint64
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil || (i < 2 && v > 1<<32-1) {
			return bad()
		}
		n[i] = v
	}
	return GTID{Domain: uint32(n[0]), Server: uint32(n[1]), Seq: n[2]}, nil
}

// ValidTag reports whether s is a GTID tag as MySQL 8.4+ accepts one: 1 to
// 32 letters, digits and underscores, not starting with a digit. MySQL
// keeps tags in lower case.
func ValidTag(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// String formats the GTID as the server does.
func (g GTID) String() string {
	if g.MySQL {
		return g.Source() + ":" + strconv.FormatUint(g.Seq, 10)
	}
	return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq)
}

// Source names the sequence the GTID belongs to: MariaDB numbers the
// transactions of each replication domain in one sequence, whichever server
// wrote them (a failover keeps counting); MySQL numbers each source server's
// (uuid, and tag) transactions.
func (g GTID) Source() string {
	if g.MySQL {
		if g.Tag != "" {
			return g.UUID + ":" + g.Tag
		}
		return g.UUID
	}
	return "domain " + strconv.FormatUint(uint64(g.Domain), 10)
}

// withSeq returns the GTID with another sequence number, for naming the
// transactions between two GTIDs of one source.
func (g GTID) withSeq(seq uint64) GTID {
	g.Seq = seq
	return g
}

// GTIDRange is the GTIDs of one source that a segment holds, in binlog
// order: First and Last, and how many GTIDs of that source there are. A
// range whose Count is Last-First+1 has no number missing inside it.
type GTIDRange struct {
	First string `json:"first"`
	Last  string `json:"last"`
	Count int    `json:"count"`
}

// AddGTID extends ranges (one per source, in order of first appearance)
// with the next transaction's GTID.
func AddGTID(ranges []GTIDRange, g GTID) []GTIDRange {
	s := g.String()
	key := sourceKey(s)
	for i := range ranges {
		if sourceKey(ranges[i].First) == key {
			ranges[i].Last = s
			ranges[i].Count++
			return ranges
		}
	}
	return append(ranges, GTIDRange{First: s, Last: s, Count: 1})
}

// sourceKey is the part of a formatted GTID that names its source: the
// domain of "0-1-5", the uuid (and tag) of "uuid:5".
func sourceKey(s string) string {
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		return s[:i]
	}
	d, _, _ := strings.Cut(s, "-")
	return d
}

// MergeGTIDRanges returns the ranges of a segment made of segments a then b.
func MergeGTIDRanges(a, b []GTIDRange) []GTIDRange {
	out := slices.Clone(a)
	for _, r := range b {
		first, err := ParseGTID(r.First)
		if err != nil {
			continue
		}
		i := slices.IndexFunc(out, func(o GTIDRange) bool { return sourceKey(o.First) == sourceKey(first.String()) })
		if i < 0 {
			out = append(out, r)
			continue
		}
		out[i].Last = r.Last
		out[i].Count += r.Count
	}
	return out
}

// GTIDSpan is a run of consecutive GTIDs of one source: First..Last.
type GTIDSpan struct {
	First GTID
	Last  GTID
}

// String formats the span as "0-1-1041..0-1-1200" (one GTID alone when First == Last).
func (s GTIDSpan) String() string {
	if s.First == s.Last {
		return s.First.String()
	}
	return s.First.String() + ".." + s.Last.String()
}

// GTIDBreak is a place where a source's sequence does not continue: the
// transaction after After is Next, not After+1.
type GTIDBreak struct {
	After GTID
	Next  GTID
}

// Missing returns the GTIDs skipped between After and Next, when Next is
// ahead of After (ok is false when Next repeats or goes back).
func (b GTIDBreak) Missing() (GTIDSpan, bool) {
	if b.Next.Seq <= b.After.Seq+1 {
		return GTIDSpan{}, false
	}
	return GTIDSpan{First: b.After.withSeq(b.After.Seq + 1), Last: b.After.withSeq(b.Next.Seq - 1)}, true
}

// String describes the break: "GTIDs 0-1-1041..0-1-1200 missing" or
// "0-1-40 follows 0-1-60" for a sequence that repeats or goes back.
func (b GTIDBreak) String() string {
	if m, ok := b.Missing(); ok {
		if m.First == m.Last {
			return "GTID " + m.String() + " missing"
		}
		return "GTIDs " + m.String() + " missing"
	}
	return fmt.Sprintf("GTID %s follows %s (the sequence goes back or repeats)", b.Next, b.After)
}

// GTIDSequence follows each source's sequence through transactions fed in
// binlog order and reports where it does not continue by exactly one.
type GTIDSequence struct {
	last  map[string]GTID
	order []string
}

// Last returns the last GTID seen of each source, in order of first appearance.
func (q *GTIDSequence) Last() []GTID {
	out := make([]GTID, 0, len(q.order))
	for _, src := range q.order {
		out = append(out, q.last[src])
	}
	return out
}

// Next feeds the next transaction's GTID; it returns the break it makes, if any.
func (q *GTIDSequence) Next(g GTID) *GTIDBreak {
	if q.last == nil {
		q.last = map[string]GTID{}
	}
	src := g.Source()
	prev, seen := q.last[src]
	q.last[src] = g
	if !seen {
		q.order = append(q.order, src)
		return nil
	}
	if g.Seq != prev.Seq+1 {
		return &GTIDBreak{After: prev, Next: g}
	}
	return nil
}

// Range feeds a segment's range of one source: its first GTID against what
// came before, and its last as the new state. It also reports a range whose
// count says numbers are missing inside it (inner is set then).
func (q *GTIDSequence) Range(r GTIDRange) (brk *GTIDBreak, inner bool, err error) {
	first, err := ParseGTID(r.First)
	if err != nil {
		return nil, false, err
	}
	last, err := ParseGTID(r.Last)
	if err != nil {
		return nil, false, err
	}
	if first.Source() != last.Source() || last.Seq < first.Seq {
		return nil, false, fmt.Errorf("%w: range %s..%s", ErrBadGTID, r.First, r.Last)
	}
	brk = q.Next(first)
	q.last[last.Source()] = last
	return brk, r.Count > 0 && uint64(r.Count) != last.Seq-first.Seq+1, nil
}

// HeldBy returns whether a GTID is at or before one of held in its own
// sequence: that of a MySQL source (uuid and tag), or of a MariaDB domain
// and server, whose binlog numbers its transactions in order (another
// server's in the same domain may take the same numbers). held is a list
// of GTIDs as servers print them, comma-separated or one per item.
func HeldBy(held ...string) (func(GTID) bool, error) {
	var hs []GTID
	for _, list := range held {
		gs, err := ParseGTIDList(list)
		if err != nil {
			return nil, err
		}
		hs = append(hs, gs...)
	}
	return func(g GTID) bool {
		for _, h := range hs {
			if g.MySQL == h.MySQL && g.UUID == h.UUID && g.Tag == h.Tag && g.Domain == h.Domain && g.Server == h.Server && g.Seq <= h.Seq {
				return true
			}
		}
		return false
	}, nil
}

// ParseGTIDList parses GTIDs separated by commas, as a server prints a
// list of them (MariaDB's gtid_binlog_state, a Gtid_list event).
func ParseGTIDList(list string) ([]GTID, error) {
	var out []GTID
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		g, err := ParseGTID(item)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

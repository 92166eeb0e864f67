package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// GTIDSet is a server's GTID state as it prints it: MySQL's gtid_executed
// (for each source, a uuid or a uuid and a tag, the intervals of GNOs it
// holds: "3e11fa47-…:1-5:tag1:1-3:tag2:7,4f…:1-9") or MariaDB's
// gtid_binlog_pos (the last GTID of each replication domain:
// "0-1-1041,1-2-7"). The zero value is the empty set.
type GTIDSet struct {
	// mysql are MySQL's sources, ordered as MySQL prints them: by uuid,
	// the untagged GNOs first, then the tags in order.
	mysql []gtidSource
	// mariadb are MariaDB's GTIDs, in the order given.
	mariadb []GTID
}

// gtidSource is one MySQL source's GNOs: sorted intervals that neither
// overlap nor touch.
type gtidSource struct {
	uuid, tag string
	iv        []gnoInterval
}

// gnoInterval is the GNOs lo..hi, both included.
type gnoInterval struct{ lo, hi uint64 }

// maxGNO is the largest GNO MySQL gives a transaction (2^63-2): it keeps
// 2^63-1 as the end of its range.
const maxGNO = 1<<63 - 2

// ParseGTIDSet parses a server's GTID state: MySQL's gtid_executed or
// MariaDB's gtid_binlog_pos, as the server prints it (MySQL separates
// uuids with ",\n"). MySQL's form is read as MySQL reads it (spaces around
// its parts, upper-case uuids and tags, intervals in any order and
// overlapping, a tag or a uuid given twice), except for what a server
// never prints and MySQL ignores: a uuid or a tag without intervals, an
// interval that ends before it starts. Empty is the empty set.
func ParseGTIDSet(s string) (GTIDSet, error) {
	var set GTIDSet
	mysql := map[[2]string]*gtidSource{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, ":") {
			g, err := ParseGTID(item)
			if err != nil {
				return GTIDSet{}, err
			}
			set.mariadb = append(set.mariadb, g)
			continue
		}
		bad := func(why string) (GTIDSet, error) { return GTIDSet{}, fmt.Errorf("%w: %q: %s", ErrBadGTID, item, why) }
		parts := strings.Split(item, ":")
		uuid := strings.TrimSpace(parts[0])
		if !isUUID(uuid) {
			return bad("not a uuid")
		}
		uuid = strings.ToLower(uuid)
		// A tag names the source of the intervals after it; each must have some.
		tag, pending, intervals := "", false, 0
		for _, p := range parts[1:] {
			p = strings.TrimSpace(p)
			lo, hi, isRange := strings.Cut(p, "-")
			if !isRange && ValidTag(p) {
				if pending {
					return bad("a tag without intervals")
				}
				tag, pending = strings.ToLower(p), true
				continue
			}
			a, err := parseGNO(lo)
			if err != nil {
				return bad(err.Error())
			}
			b := a
			if isRange {
				if b, err = parseGNO(hi); err != nil {
					return bad(err.Error())
				}
				if b < a {
					return bad(fmt.Sprintf("interval %s ends before it starts", p))
				}
			}
			key := [2]string{uuid, tag}
			src := mysql[key]
			if src == nil {
				src = &gtidSource{uuid: uuid, tag: tag}
				mysql[key] = src
			}
			src.add(a, b)
			pending = false
			intervals++
		}
		if pending {
			return bad("a tag without intervals")
		}
		if intervals == 0 {
			return bad("no intervals")
		}
	}
	for _, src := range mysql {
		set.mysql = append(set.mysql, *src)
	}
	slices.SortFunc(set.mysql, func(a, b gtidSource) int {
		return cmp.Or(strings.Compare(a.uuid, b.uuid), strings.Compare(a.tag, b.tag))
	})
	return set, nil
}

// parseGNO reads one GNO: 1 to 2^63-2.
func parseGNO(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || n == 0 || n > maxGNO {
		return 0, fmt.Errorf("GNO %q is not a number from 1 to %d", s, uint64(maxGNO))
	}
	return n, nil
}

// add puts lo..hi into the source's intervals, merging what overlaps or touches.
func (s *gtidSource) add(lo, hi uint64) {
	i, _ := slices.BinarySearchFunc(s.iv, lo, func(iv gnoInterval, lo uint64) int { return cmp.Compare(iv.lo, lo) })
	s.iv = slices.Insert(s.iv, i, gnoInterval{lo, hi})
	out := s.iv[:0]
	for _, iv := range s.iv {
		if n := len(out); n > 0 && iv.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, iv.hi)
			continue
		}
		out = append(out, iv)
	}
	s.iv = out
}

// String formats the set as the server does, on one line: MariaDB's
// GTIDs, then MySQL's uuids, each with its untagged intervals and then
// each tag's ("uuid:1-5:tag1:1-3,uuid2:7"), separated by commas.
func (s GTIDSet) String() string {
	var items []string
	for _, g := range s.mariadb {
		items = append(items, g.String())
	}
	var b strings.Builder
	for i, src := range s.mysql {
		if i == 0 || src.uuid != s.mysql[i-1].uuid {
			if b.Len() > 0 {
				items = append(items, b.String())
				b.Reset()
			}
			b.WriteString(src.uuid)
		}
		if src.tag != "" {
			b.WriteString(":" + src.tag)
		}
		for _, iv := range src.iv {
			b.WriteString(":" + strconv.FormatUint(iv.lo, 10))
			if iv.hi != iv.lo {
				b.WriteString("-" + strconv.FormatUint(iv.hi, 10))
			}
		}
	}
	if b.Len() > 0 {
		items = append(items, b.String())
	}
	return strings.Join(items, ",")
}

// Last returns the last GTID of each source: MariaDB's GTIDs as given, and
// the largest GNO of each MySQL source, in the set's order.
func (s GTIDSet) Last() []GTID {
	out := slices.Clone(s.mariadb)
	for _, src := range s.mysql {
		out = append(out, GTID{MySQL: true, UUID: src.uuid, Tag: src.tag, Seq: src.iv[len(src.iv)-1].hi})
	}
	return out
}

// Contains reports whether the set holds g: for MySQL, whether g's GNO is
// in its source's intervals; for MariaDB, whether g's domain is at g or
// past it (a position holds what came before it).
func (s GTIDSet) Contains(g GTID) bool {
	if !g.MySQL {
		return slices.ContainsFunc(s.mariadb, func(m GTID) bool { return m.Domain == g.Domain && g.Seq <= m.Seq })
	}
	for _, src := range s.mysql {
		if src.uuid == g.UUID && src.tag == g.Tag {
			_, found := slices.BinarySearchFunc(src.iv, g.Seq, func(iv gnoInterval, seq uint64) int {
				switch {
				case iv.hi < seq:
					return -1
				case iv.lo > seq:
					return 1
				}
				return 0
			})
			return found
		}
	}
	return false
}

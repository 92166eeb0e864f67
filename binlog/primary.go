package binlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Candidate is what one of the servers the archive may follow is now.
type Candidate struct {
	Source *Source
	Info   ServerInfo
	// ReadOnly: the server refuses ordinary writes (read_only, or MySQL's
	// super_read_only). Operators keep every replica so; the primary is
	// the one that is not.
	ReadOnly bool
	// Err is why the server could not be asked (then nothing else is set).
	Err error
}

// ErrNoPrimary is returned by FindPrimary when no candidate, or more than
// one, takes writes.
var ErrNoPrimary = errors.New("no single primary among the candidates")

// Candidates asks each server what it is now, all at once, each within
// the deadline of ctx or 10 s.
func Candidates(ctx context.Context, sources []*Source) []Candidate {
	out := make([]Candidate, len(sources))
	done := make(chan struct{})
	for i, s := range sources {
		go func() {
			defer func() { done <- struct{}{} }()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			out[i] = describe(cctx, s)
		}()
	}
	for range sources {
		<-done
	}
	return out
}

// describe asks one server for its identity and whether it takes writes.
func describe(ctx context.Context, s *Source) Candidate {
	c := Candidate{Source: s}
	info, err := s.Info(ctx)
	if err != nil {
		c.Err = err
		return c
	}
	q := "SELECT @@GLOBAL.read_only"
	if info.Flavor == MySQL {
		q = "SELECT @@GLOBAL.read_only OR @@GLOBAL.super_read_only"
	}
	var ro int
	if err := s.db.QueryRowContext(ctx, q).Scan(&ro); err != nil {
		c.Err = s.classify(err)
		return c
	}
	c.Info, c.ReadOnly = info, ro != 0
	return c
}

// FindPrimary returns the one server among the candidates that takes
// writes; a server reached under two addresses counts once. With none (a
// failover under way) or several (a primary not yet fenced off), it fails
// with an error wrapping ErrNoPrimary that describes every candidate: an
// archive follows no server it cannot tell is the primary.
func FindPrimary(ctx context.Context, sources []*Source) (Candidate, error) {
	var writable []Candidate
	var seen []string
	servers := map[string]bool{} // one server may be a candidate under two addresses
	for _, c := range Candidates(ctx, sources) {
		id := fmt.Sprintf("%d/%s", c.Info.ServerID, c.Info.UUID)
		switch {
		case c.Err != nil:
			seen = append(seen, fmt.Sprintf("%s: %v", c.Source.Address(), c.Err))
		case c.ReadOnly:
			seen = append(seen, c.Source.Address()+": read-only")
		case servers[id]:
		default:
			servers[id] = true
			seen = append(seen, c.Source.Address()+": writable")
			writable = append(writable, c)
		}
	}
	if len(writable) != 1 {
		return Candidate{}, fmt.Errorf("%w: %d writable (%s)", ErrNoPrimary, len(writable), strings.Join(seen, "; "))
	}
	return writable[0], nil
}

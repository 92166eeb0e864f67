package kube

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/restore"
)

// RestoreContainer is the name of the chart's init container that runs
// files/restore.sh.
const RestoreContainer = "pitr-restore"

// Request is one pod's entry in the chart's restore-requests ConfigMap: the
// key is the pod's name, the value is "key=value" lines. restore.sh reads
// only id and to; created is for people reading the ConfigMap.
type Request struct {
	// ID is new for every restore; restore.sh restores when it differs from
	// the id recorded in the datadir (mysql-pitr-request).
	ID string
	// To is an RFC 3339 time with a zone, or "latest".
	To string
	// Created is when the request was written (zero if not recorded).
	Created time.Time
}

// Format renders the request as restore.sh expects it.
func (r Request) Format() string {
	s := "id=" + r.ID + "\nto=" + r.To + "\n"
	if !r.Created.IsZero() {
		s += "created=" + r.Created.UTC().Format(time.RFC3339) + "\n"
	}
	return s
}

// ParseRequest reads a ConfigMap value the way restore.sh does: the first
// id= and to= lines, surrounding blanks trimmed.
func ParseRequest(v string) (Request, error) {
	var r Request
	seen := map[string]bool{}
	for line := range strings.Lines(v) {
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "id":
			r.ID = val
		case "to":
			r.To = val
		case "created":
			r.Created, _ = time.Parse(time.RFC3339, val)
		}
	}
	if !validID(r.ID) {
		return r, fmt.Errorf("request id %q: want letters, digits, '.', '_' or '-'", r.ID)
	}
	if r.To == "" {
		return r, fmt.Errorf("request %s: no to= line", r.ID)
	}
	return r, nil
}

func validID(id string) bool {
	if id == "" {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewID returns a request id that sorts by time and does not repeat:
// 20261127-104107-1a2b3c.
func NewID(now time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// RequestsConfigMap is the name the chart gives the restore-requests
// ConfigMap of a release (mysql-pitr.restoreRequestsName).
func RequestsConfigMap(release string) string {
	name := release + "-restore-requests"
	if len(name) > 63 {
		name = name[:63]
	}
	return strings.TrimRight(name, "-")
}

// Termination is what restore.sh writes to /dev/termination-log when it
// exits successfully: which request the datadir now serves and the
// restore's marker (restore.MarkerFile) as JSON.
type Termination struct {
	Request string `json:"request"`
	// Result is "restored" (this start restored) or "already-restored"
	// (the datadir already served the request).
	Result string          `json:"result"`
	Marker *restore.Marker `json:"marker,omitempty"`
}

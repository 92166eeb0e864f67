package benchkit

import (
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

func TestPosAtLeast(t *testing.T) {
	pos := func(f string, p uint64) catalog.Position { return catalog.Position{File: f, Pos: p} }
	tests := []struct {
		name string
		a, b catalog.Position
		want bool
	}{
		{"same", pos("mysql-bin.000002", 100), pos("mysql-bin.000002", 100), true},
		{"behind in file", pos("mysql-bin.000002", 99), pos("mysql-bin.000002", 100), false},
		{"later file", pos("mysql-bin.000003", 4), pos("mysql-bin.000002", 900), true},
		{"earlier file", pos("mysql-bin.000002", 900), pos("mysql-bin.000010", 4), false},
		{"nothing yet", catalog.Position{}, pos("mysql-bin.000001", 4), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PosAtLeast(tt.a, tt.b); got != tt.want {
				t.Errorf("PosAtLeast(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

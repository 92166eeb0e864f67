package storagetest

import (
	"strings"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

func TestMemory(t *testing.T) {
	Run(t, func(t *testing.T) storage.Storage { return NewMemory() }, Options{
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			if !s.(*Memory).Corrupt(key) {
				t.Fatalf("corrupt %q: no such non-empty object", key)
			}
		},
	})
}

func TestMemoryZeroValue(t *testing.T) {
	var m Memory
	if _, err := m.Put(t.Context(), "k", strings.NewReader("v"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put on a zero Memory: %v", err)
	}
	if got := mustRead(t, &m, "k"); string(got) != "v" {
		t.Errorf("read back %q, want %q", got, "v")
	}
}

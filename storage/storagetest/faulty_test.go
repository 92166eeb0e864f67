package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/storage"
)

// TestFaultyWithoutFaults checks that a Faulty with nothing configured is
// a transparent wrapper that keeps the whole contract.
func TestFaultyWithoutFaults(t *testing.T) {
	Run(t, func(t *testing.T) storage.Storage { return NewFaulty(NewMemory(), 1, Faults{}) }, Options{})
}

func TestFaultyPutErrors(t *testing.T) {
	ctx := t.Context()
	mem := NewMemory()
	f := NewFaulty(mem, 1, Faults{PutErrRate: 1})
	for _, size := range []int{0, 10, 200 << 10} {
		_, err := f.Put(ctx, "k", bytes.NewReader(make([]byte, size)), storage.PutOptions{})
		if !errors.Is(err, ErrInjected) {
			t.Fatalf("Put of %d bytes: error = %v, want ErrInjected", size, err)
		}
	}
	// The failure reached the wrapped store as a broken reader, which it
	// handled by storing nothing.
	if list, _ := mem.List(ctx, ""); len(list) != 0 {
		t.Errorf("failed puts left %v", list)
	}
	if got := f.Injected(); got != 3 {
		t.Errorf("Injected = %d, want 3", got)
	}
}

func TestFaultyFailNextPuts(t *testing.T) {
	ctx := t.Context()
	f := NewFaulty(NewMemory(), 1, Faults{})
	f.FailNextPuts(2)
	var got []bool
	for i := range 4 {
		_, err := f.Put(ctx, fmt.Sprint("k", i), strings.NewReader("v"), storage.PutOptions{})
		if err != nil && !errors.Is(err, ErrInjected) {
			t.Fatalf("Put: unexpected error %v", err)
		}
		got = append(got, err == nil)
	}
	if want := []bool{false, false, true, true}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("puts succeeded = %v, want %v", got, want)
	}
}

func TestFaultyAckLoss(t *testing.T) {
	ctx := t.Context()
	mem := NewMemory()
	f := NewFaulty(mem, 1, Faults{PutAckLossRate: 1})
	if _, err := f.Put(ctx, "k", strings.NewReader("v"), storage.PutOptions{}); !errors.Is(err, ErrInjected) {
		t.Fatalf("Put: error = %v, want ErrInjected", err)
	}
	if got := mustRead(t, mem, "k"); string(got) != "v" {
		t.Errorf("the object whose ack was lost holds %q, want %q", got, "v")
	}
}

func TestFaultyDown(t *testing.T) {
	ctx := t.Context()
	f := NewFaulty(NewMemory(), 1, Faults{})
	if _, err := f.Put(ctx, "k", bytes.NewReader(make([]byte, 1000)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	open, err := f.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	f.Down(true)
	calls := map[string]error{}
	_, calls["Put"] = f.Put(ctx, "k2", strings.NewReader("v"), storage.PutOptions{})
	_, calls["Open"] = f.Open(ctx, "k")
	_, calls["OpenRange"] = f.OpenRange(ctx, "k", 0, 1)
	_, calls["Stat"] = f.Stat(ctx, "k")
	_, calls["List"] = f.List(ctx, "")
	calls["Delete"] = f.Delete(ctx, "k")
	_, calls["Read"] = open.Read(make([]byte, 10))
	for name, err := range calls {
		if !errors.Is(err, ErrDown) || !errors.Is(err, ErrInjected) {
			t.Errorf("%s while down: error = %v, want ErrDown", name, err)
		}
	}

	f.Down(false)
	if got := mustRead(t, f, "k"); len(got) != 1000 {
		t.Errorf("after coming back up, read %d bytes, want 1000", len(got))
	}
	if _, err := f.Stat(ctx, "k2"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat of the key put while down: %v, want ErrNotExist", err)
	}
}

func TestFaultyReadFaults(t *testing.T) {
	ctx := t.Context()
	f := NewFaulty(NewMemory(), 1, Faults{})
	data := bytes.Repeat([]byte("x"), 2*cutWithin)
	if _, err := f.Put(ctx, "k", bytes.NewReader(data), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	f.SetFaults(Faults{ReadCutRate: 1})
	rc, err := f.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrInjected) || len(got) >= len(data) {
		t.Errorf("read of a cut reader: %d bytes, %v; want fewer than %d and ErrInjected", len(got), err, len(data))
	}

	f.SetFaults(Faults{ReadErrRate: 1, DeleteErrRate: 1})
	if _, err := f.Stat(ctx, "k"); !errors.Is(err, ErrInjected) {
		t.Errorf("Stat: %v, want ErrInjected", err)
	}
	if _, err := f.List(ctx, ""); !errors.Is(err, ErrInjected) {
		t.Errorf("List: %v, want ErrInjected", err)
	}
	if err := f.Delete(ctx, "k"); !errors.Is(err, ErrInjected) {
		t.Errorf("Delete: %v, want ErrInjected", err)
	}
	f.SetFaults(Faults{})
	if _, err := f.Stat(ctx, "k"); err != nil {
		t.Errorf("Stat after a failed Delete: %v; the object should still be there", err)
	}
}

func TestFaultyDelays(t *testing.T) {
	f := NewFaulty(NewMemory(), 1, Faults{PutDelay: 50 * time.Millisecond, Delay: 20 * time.Millisecond})
	start := time.Now()
	if _, err := f.Put(t.Context(), "k", strings.NewReader("v"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("Put took %v, want at least the 50ms delay", d)
	}
	start = time.Now()
	if _, err := f.Stat(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("Stat took %v, want at least the 20ms delay", d)
	}
	// A delay gives way to the caller's deadline.
	f.SetFaults(Faults{PutDelay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := f.Put(ctx, "k", strings.NewReader("v"), storage.PutOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delayed Put past its deadline: %v, want DeadlineExceeded", err)
	}
}

// pattern returns which of n sequential puts fail for a seed.
func pattern(t *testing.T, seed uint64, n int) string {
	t.Helper()
	f := NewFaulty(NewMemory(), seed, Faults{PutErrRate: 0.5})
	var b strings.Builder
	for i := range n {
		_, err := f.Put(t.Context(), fmt.Sprint("k", i), strings.NewReader("v"), storage.PutOptions{})
		if err != nil {
			b.WriteByte('x')
		} else {
			b.WriteByte('.')
		}
	}
	return b.String()
}

func TestFaultyDeterministic(t *testing.T) {
	a, b, c := pattern(t, 7, 64), pattern(t, 7, 64), pattern(t, 8, 64)
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different seeds, same faults: %s", a)
	}
	if !strings.Contains(a, "x") || !strings.Contains(a, ".") {
		t.Errorf("rate 0.5 gave %s", a)
	}
}

func TestFaultyConcurrent(t *testing.T) {
	f := NewFaulty(NewMemory(), 3, Faults{PutErrRate: 0.3, ReadErrRate: 0.3, ReadCutRate: 0.3, DeleteErrRate: 0.3})
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				key := fmt.Sprintf("w%d/%d", w, i%5)
				data := bytes.Repeat([]byte{byte(i)}, 1000*i)
				if _, err := f.Put(ctx, key, bytes.NewReader(data), storage.PutOptions{}); err != nil && !errors.Is(err, ErrInjected) {
					t.Errorf("Put: %v", err)
				}
				if b, err := readAll(ctx, f, key); err != nil && !errors.Is(err, ErrInjected) && !errors.Is(err, storage.ErrNotExist) {
					t.Errorf("read: %v", err)
				} else if err == nil && len(b) > 0 && b[0] != b[len(b)-1] {
					t.Errorf("read a mixed object")
				}
				if i%7 == 0 {
					f.Down(i%2 == 0)
					f.SetFaults(Faults{PutErrRate: float64(i%3) / 3})
				}
				if err := f.Delete(ctx, key); err != nil && !errors.Is(err, ErrInjected) {
					t.Errorf("Delete: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if f.Injected() == 0 {
		t.Error("no faults injected")
	}
}

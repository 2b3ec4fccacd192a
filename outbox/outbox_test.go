package outbox

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func appendN(t *testing.T, o *Outbox, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := o.Append(func(seq uint64) (string, []byte, error) {
			return "ward.h.events.started", []byte(fmt.Sprintf(`{"seq":%d}`, seq)), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAppendAckReopen(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 5)
	p := o.Pending(3)
	if len(p) != 3 || p[0].Seq != 1 || p[2].Seq != 3 || string(p[1].Data) != `{"seq":2}` {
		t.Fatalf("pending %+v", p)
	}
	if err := o.Ack(3); err != nil {
		t.Fatal(err)
	}
	// A crash now: the unconfirmed 4 and 5 come back, numbering continues.
	o2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := o2.Pending(10); len(p) != 2 || p[0].Seq != 4 || p[1].Seq != 5 || p[0].Subject != "ward.h.events.started" {
		t.Fatalf("after reopen: %+v", p)
	}
	appendN(t, o2, 1)
	if o2.Last() != 6 {
		t.Fatalf("next number %d, want 6", o2.Last())
	}
	// All confirmed, then a restart: numbers are not reused.
	if err := o2.Ack(6); err != nil {
		t.Fatal(err)
	}
	o3, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if o3.Len() != 0 || o3.Last() != 6 {
		t.Fatalf("empty outbox: len %d last %d", o3.Len(), o3.Last())
	}
	appendN(t, o3, 1)
	if p := o3.Pending(1); p[0].Seq != 7 {
		t.Fatalf("seq after restart %d, want 7", p[0].Seq)
	}
}

func TestInterruptedWriteIgnored(t *testing.T) {
	dir := t.TempDir()
	o, _ := Open(dir)
	appendN(t, o, 2)
	os.WriteFile(filepath.Join(dir, ".00000000000000000003.tmp-1"), []byte("partial"), 0o600)
	o2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if o2.Len() != 2 || o2.Last() != 2 {
		t.Fatalf("len %d last %d", o2.Len(), o2.Last())
	}
}

func TestAppendNotifies(t *testing.T) {
	o, _ := Open(t.TempDir())
	appendN(t, o, 3)
	select {
	case <-o.Notify():
	default:
		t.Fatal("no notification")
	}
}

func TestSync(t *testing.T) {
	o, _ := Open(t.TempDir())
	appendN(t, o, 3)
	if err := o.Sync(o.Pending(10)); err != nil {
		t.Fatal(err)
	}
	if err := o.Sync([]Item{{Seq: 99}}); err == nil {
		t.Fatal("sync of a missing item succeeded")
	}
}

// TestHeldItemWaitsForRelease: a held item, and everything after it, is
// not sent until released; holding does not survive a reopen, which
// returns every stored item in order.
func TestHeldItemWaitsForRelease(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 1)
	held, err := o.AppendHeld(func(seq uint64) (string, []byte, error) {
		return "ward.h.events.started", []byte(fmt.Sprintf(`{"seq":%d}`, seq)), nil
	})
	if err != nil || held.Seq != 2 {
		t.Fatalf("AppendHeld: %+v %v", held, err)
	}
	appendN(t, o, 1)
	if p := o.Pending(10); len(p) != 1 || p[0].Seq != 1 {
		t.Fatalf("pending with 2 held: %+v, want only 1", p)
	}
	if o.Len() != 3 || o.Last() != 3 {
		t.Fatalf("len %d last %d, want 3 and 3", o.Len(), o.Last())
	}

	// A crash before the release: the reopened outbox holds nothing back.
	o2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := o2.Pending(10); len(p) != 3 || p[1].Seq != 2 || string(p[1].Data) != `{"seq":2}` {
		t.Fatalf("after reopen: %+v, want 1, 2, 3", p)
	}

	select {
	case <-o.Notify():
	default:
	}
	o.Release(held.Seq)
	select {
	case <-o.Notify():
	default:
		t.Fatal("no notification after Release")
	}
	if p := o.Pending(10); len(p) != 3 || p[1].Seq != 2 || p[2].Seq != 3 {
		t.Fatalf("pending after release: %+v, want 1, 2, 3", p)
	}
}

// A power loss can leave a never-synced item empty or cut before its
// subject ends. Open used to refuse the whole outbox — and so the agent to
// start — over it; it sets the item aside and numbers on.
func TestTornItemSetAside(t *testing.T) {
	for _, torn := range []string{"", "ward.h.ev", "\n{}", "\x00\x00\x00\x00"} {
		dir := t.TempDir()
		o, _ := Open(dir)
		appendN(t, o, 3)
		if err := os.WriteFile(o.path(2), []byte(torn), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(o.path(3), []byte(torn), 0o600); err != nil {
			t.Fatal(err)
		}
		o2, err := Open(dir)
		if err != nil {
			t.Fatalf("torn %q: %v", torn, err)
		}
		if p := o2.Pending(10); len(p) != 1 || p[0].Seq != 1 || o2.Last() != 1 {
			t.Fatalf("torn %q: pending %+v, last %d", torn, p, o2.Last())
		}
		if _, err := os.Stat(o.path(3) + ".torn"); err != nil {
			t.Fatalf("torn %q: not set aside: %v", torn, err)
		}
		// Never sent, so its number is free again.
		appendN(t, o2, 1)
		if p := o2.Pending(10); len(p) != 2 || p[1].Seq != 2 {
			t.Fatalf("torn %q: after Append %+v", torn, p)
		}
	}
}

// A crash inside Ack, after "last" and before the removals, leaves
// confirmed items behind: Open drops them instead of sending them again.
func TestConfirmedLeftoversDropped(t *testing.T) {
	dir := t.TempDir()
	o, _ := Open(dir)
	appendN(t, o, 4)
	if err := os.WriteFile(filepath.Join(dir, "last"), []byte("3"), 0o600); err != nil {
		t.Fatal(err)
	}
	o2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p := o2.Pending(10); len(p) != 1 || p[0].Seq != 4 {
		t.Fatalf("pending %+v", p)
	}
	if _, err := os.Stat(o.path(1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("confirmed item 1 still there: %v", err)
	}
}

// Numbering used to wrap from the largest uint64 to 0, reusing numbers the
// bus had confirmed.
func TestExhausted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "last"), []byte(strconv.FormatUint(math.MaxUint64-1, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, o, 1)
	if o.Last() != math.MaxUint64 {
		t.Fatalf("Last %d", o.Last())
	}
	if _, err := o.Append(func(uint64) (string, []byte, error) { return "s", nil, nil }); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Append past the end: %v", err)
	}
	if o.Len() != 1 {
		t.Fatalf("len %d", o.Len())
	}
	if _, err := Open(dir); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Open with the last number in use: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "last"), []byte(strconv.FormatUint(math.MaxUint64, 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack(math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Open with last at the end: %v", err)
	}
}

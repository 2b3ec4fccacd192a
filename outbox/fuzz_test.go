package outbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzRecover builds an outbox directory from fuzzed content — items of any
// number, whole, empty or torn, stray temporary files, foreign names,
// directories where files belong, any "last" — and checks what Open
// promises: it never panics; it either refuses with an error or recovers
// exactly the whole unconfirmed items, in order, numbering on above every
// recovered and every confirmed number; and the recovered outbox then goes
// through Append, Pending, Ack and a reopen without ever reusing a number.
func FuzzRecover(f *testing.F) {
	item := func(seq uint64) []byte {
		var b [9]byte
		b[0] = 0xff
		binary.BigEndian.PutUint64(b[1:], seq)
		return b[:]
	}
	op := func(kind byte, seq []byte, chunk string) []byte {
		b := append([]byte{kind}, seq...)
		return append(append(b, byte(len(chunk))), chunk...)
	}
	cat := func(ops ...[]byte) []byte { return bytes.Join(ops, nil) }
	f.Add("", false, []byte(nil))
	f.Add("3", true, cat(op(opItem, []byte{4}, `{"seq":4}`), op(opItem, []byte{5}, `{"seq":5}`)))
	f.Add("3\n", true, cat(op(opItem, []byte{2}, `{}`), op(opItem, []byte{4}, `{}`), op(opTemp, []byte{5}, "part")))
	f.Add("", false, cat(op(opRaw, []byte{1}, ""), op(opItem, []byte{2}, "x")))
	f.Add("7", true, cat(op(opTruncated, []byte{8}, "\x05ward.h.events.started"), op(opItem, []byte{9}, "")))
	f.Add("x", true, cat(op(opItem, []byte{1}, "")))
	f.Add("", true, []byte(nil))
	f.Add(strconv.FormatUint(math.MaxUint64, 10), true, []byte(nil))
	f.Add(strconv.FormatUint(math.MaxUint64-1, 10), true, []byte(nil))
	f.Add("", false, cat(op(opItem, item(math.MaxUint64), "{}")))
	f.Add("", false, cat(op(opItem, item(math.MaxUint64-1), "{}")))
	f.Add("", false, cat(op(opDir, []byte{3}, ""), op(opItem, []byte{4}, "")))
	f.Add("", false, cat(op(opName, nil, "00000000000000000001.tmp"), op(opWidth, []byte{2}, "{}"), op(opName, nil, "-0000000000000000001")))
	f.Add("", false, cat(op(opLastDir, nil, "")))

	f.Fuzz(func(t *testing.T, last string, hasLast bool, spec []byte) {
		dir := t.TempDir()
		build(t, dir, last, hasLast, spec)
		want := expect(t, dir)

		o, err := Open(dir)
		if err != nil {
			if want.err == "" {
				t.Fatalf("Open refused a recoverable outbox: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "outbox: ") || !strings.Contains(err.Error(), want.err) {
				t.Fatalf("Open error %q does not say %q", err, want.err)
			}
			if want.err == "exhausted" && !errors.Is(err, ErrExhausted) {
				t.Fatalf("Open error %q is not ErrExhausted", err)
			}
			return
		}
		if want.err != "" {
			t.Fatalf("Open accepted an outbox it should refuse (%s): pending %d, last %d", want.err, o.Len(), o.Last())
		}
		got := o.Pending(math.MaxInt)
		if len(got) != len(want.pending) {
			t.Fatalf("recovered %d items, want %d: %+v", len(got), len(want.pending), got)
		}
		for i, it := range got {
			w := want.pending[i]
			if it.Seq != w.Seq || it.Subject != w.Subject || !bytes.Equal(it.Data, w.Data) {
				t.Fatalf("item %d is %d %q %q, want %d %q %q", i, it.Seq, it.Subject, it.Data, w.Seq, w.Subject, w.Data)
			}
		}
		if o.Last() != want.top {
			t.Fatalf("Last() = %d after recovery, want %d (confirmed %d)", o.Last(), want.top, want.last)
		}
		for _, name := range want.gone {
			if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s still there after Open (%v)", name, err)
			}
		}

		// Round trip: the new item takes the next number, is delivered
		// after the recovered ones, and once confirmed is never handed out
		// again, not even after a restart.
		it, err := o.Append(func(seq uint64) (string, []byte, error) {
			return "ward.h.events.started", []byte(strconv.FormatUint(seq, 10)), nil
		})
		if err != nil {
			t.Fatalf("Append after recovery: %v", err)
		}
		if it.Seq != want.top+1 {
			t.Fatalf("Append numbered %d, want %d", it.Seq, want.top+1)
		}
		p := o.Pending(math.MaxInt)
		if len(p) != len(want.pending)+1 || p[len(p)-1].Seq != it.Seq {
			t.Fatalf("pending after Append: %+v", p)
		}
		if err := o.Sync(p); err != nil {
			t.Fatal(err)
		}
		if err := o.Ack(it.Seq); err != nil {
			t.Fatal(err)
		}
		if o.Len() != 0 {
			t.Fatalf("%d items left after Ack(%d)", o.Len(), it.Seq)
		}
		if it.Seq == math.MaxUint64 {
			if _, err := o.Append(func(uint64) (string, []byte, error) { return "s", nil, nil }); !errors.Is(err, ErrExhausted) {
				t.Fatalf("Append after the last number: %v, want ErrExhausted", err)
			}
			if _, err := Open(dir); !errors.Is(err, ErrExhausted) {
				t.Fatalf("reopen after the last number: %v, want ErrExhausted", err)
			}
			return
		}
		o2, err := Open(dir)
		if err != nil {
			t.Fatalf("reopen after Ack: %v", err)
		}
		if o2.Len() != 0 || o2.Last() != it.Seq {
			t.Fatalf("reopen after Ack(%d): %d pending, Last %d", it.Seq, o2.Len(), o2.Last())
		}
		next, err := o2.Append(func(seq uint64) (string, []byte, error) { return "s", nil, nil })
		if err != nil || next.Seq != it.Seq+1 {
			t.Fatalf("Append after reopen: %d, %v; want %d", next.Seq, err, it.Seq+1)
		}
	})
}

// The operations of a fuzzed directory description: a kind byte, for most
// kinds a sequence number (one byte, or 0xff and eight big-endian bytes),
// then a length byte and that many bytes of content.
const (
	opItem      = iota // a whole item: subject, newline, the content as data
	opRaw              // an item-named file holding exactly the content
	opTruncated        // a whole item cut after content[0] bytes (content[1:] as data)
	opTemp             // an interrupted write: a dot-file as atomicfile names them
	opName             // a file of any name (the content up to a '=' is the name)
	opDir              // a directory with an item's name, holding a file
	opWidth            // an item-shaped name one digit short or long
	opLastDir          // "last" is a directory
	opCount
)

func build(t *testing.T, dir, last string, hasLast bool, spec []byte) {
	t.Helper()
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		os.RemoveAll(p)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if hasLast {
		write("last", []byte(last))
	}
	for len(spec) > 0 {
		kind := spec[0] % opCount
		spec = spec[1:]
		var seq uint64
		if kind != opName && kind != opLastDir {
			if len(spec) == 0 {
				return
			}
			seq, spec = uint64(spec[0]), spec[1:]
			if seq == 0xff && len(spec) >= 8 {
				seq, spec = binary.BigEndian.Uint64(spec), spec[8:]
			}
		}
		var content []byte
		if len(spec) > 0 {
			n := min(int(spec[0]), len(spec)-1)
			content, spec = spec[1:1+n], spec[1+n:]
		}
		name := fmt.Sprintf("%020d", seq)
		switch kind {
		case opItem:
			write(name, append([]byte("ward.h.events.started\n"), content...))
		case opRaw:
			write(name, content)
		case opTruncated:
			whole := []byte("ward.h.events.started\n")
			cut := 0
			if len(content) > 0 {
				whole = append(whole, content[1:]...)
				cut = int(content[0]) % (len(whole) + 1)
			}
			write(name, whole[:cut])
		case opTemp:
			write("."+name+".tmp-"+strconv.FormatUint(seq*7919%1000003, 10), content)
		case opName:
			n, body, _ := bytes.Cut(content, []byte("="))
			name := strings.Map(func(r rune) rune {
				if r == '/' || r == 0 {
					return '_'
				}
				return r
			}, string(n))
			if name == "" || name == "." || name == ".." || name == "last" || len(name) > 200 {
				continue
			}
			write(name, body)
		case opDir:
			p := filepath.Join(dir, name)
			os.RemoveAll(p)
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, "x"), content, 0o600); err != nil {
				t.Fatal(err)
			}
		case opWidth:
			if seq%2 == 0 {
				name = name[1:]
			} else {
				name = "0" + name
			}
			write(name, append([]byte("ward.h.events.started\n"), content...))
		case opLastDir:
			p := filepath.Join(dir, "last")
			os.RemoveAll(p)
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// recovery is what Open must make of a directory, worked out from the
// directory alone.
type recovery struct {
	err     string // a word the refusal must contain; "" if Open must succeed
	last    uint64 // the confirmed number
	top     uint64 // the highest number in use: Last() after Open
	pending []Item
	gone    []string // names Open must have removed or set aside
}

func expect(t *testing.T, dir string) recovery {
	t.Helper()
	var r recovery
	if st, err := os.Lstat(filepath.Join(dir, "last")); err == nil {
		if st.IsDir() {
			return recovery{err: "last"}
		}
		b, err := os.ReadFile(filepath.Join(dir, "last"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return recovery{err: "last"}
		}
		r.last = v
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var refuse string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			if !e.IsDir() {
				r.gone = append(r.gone, name)
			}
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil || len(name) != 20 {
			continue
		}
		if seq <= r.last {
			// Confirmed; the file outlived a crash inside Ack.
			if !e.IsDir() {
				r.gone = append(r.gone, name)
			}
			continue
		}
		if e.IsDir() {
			if refuse == "" {
				refuse = name // Open stops at the first
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		subj, data, ok := bytes.Cut(b, []byte("\n"))
		if !ok || len(subj) == 0 {
			// Torn by a power loss: never synced, so never sent.
			r.gone = append(r.gone, name)
			continue
		}
		r.pending = append(r.pending, Item{Seq: seq, Subject: string(subj), Data: data})
	}
	if refuse != "" {
		return recovery{err: refuse}
	}
	// ReadDir sorts by name, and item names are fixed-width numbers.
	r.top = r.last
	if n := len(r.pending); n > 0 {
		r.top = max(r.top, r.pending[n-1].Seq)
	}
	if r.top == math.MaxUint64 {
		return recovery{err: "exhausted"}
	}
	return r
}

// Package outbox keeps the agent's events on disk from the moment they are
// numbered until the bus has confirmed them, so that no outage, buffer
// overflow or crash loses one: they arrive late, at least once, in order.
//
// Each event is one file, named by its zero-padded sequence number, written
// atomically before Append returns and synced to disk (Sync) before it is
// sent: an agent crash loses nothing (the page cache outlives the process),
// and no consumer ever sees an event a power loss could take back. What a
// power loss can take is an event not yet sent — together with the
// instances it was about, which the power loss ended too; its number is then
// handed out again, so consumers see no gap. Such an item may also come
// back empty or cut short: Open sets it aside as <name>.torn (a synced item
// is always whole, so it was never sent). Ack removes confirmed files.
// The highest number ever confirmed is kept in "last" (written before any
// file is removed), so a confirmed number is never reused; a file Ack did
// not get to remove before a crash is dropped by Open, not sent again.
package outbox

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hostward/ward/atomicfile"
)

// Item is one event waiting for confirmation.
type Item struct {
	Seq     uint64
	Subject string
	Data    []byte
}

// Outbox is an on-disk queue of numbered items.
type Outbox struct {
	dir string

	mu      sync.Mutex
	next    uint64 // next sequence number
	last    uint64 // value of the "last" file
	pending []Item
	held    map[uint64]struct{} // stored, not to be sent yet (AppendHeld)
	notify  chan struct{}
	// exhausted: the number MaxUint64 is used; there is no next one.
	exhausted bool
}

// ErrExhausted means every sequence number has been used: numbering on
// would reuse confirmed ones. Only a corrupted "last" gets near it.
var ErrExhausted = errors.New("outbox: sequence numbers exhausted")

const nameWidth = 20

// Open loads the outbox in dir, creating it if needed.
func Open(dir string) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &Outbox{dir: dir, held: map[uint64]struct{}{}, notify: make(chan struct{}, 1)}
	if b, err := os.ReadFile(filepath.Join(dir, "last")); err == nil {
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("outbox: %s/last: %w", dir, err)
		}
		o.last = v
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	top := o.last
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(dir, name)
		if strings.HasPrefix(name, ".") {
			os.Remove(path) // an interrupted write
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil || len(name) != nameWidth {
			continue
		}
		if seq <= o.last {
			// Confirmed: a crash inside Ack came between "last" and
			// this removal. Sending it again would only make a repeat.
			os.Remove(path)
			continue
		}
		it, err := readItem(path, seq)
		if errors.Is(err, errTorn) {
			// A synced item is whole, so this one was never synced and
			// never sent: the power loss took it. Kept aside for a look.
			os.Rename(path, path+".torn")
			continue
		}
		if err != nil {
			return nil, err
		}
		o.pending = append(o.pending, it)
		top = max(top, seq)
	}
	if top == math.MaxUint64 {
		return nil, fmt.Errorf("%w: %s holds number %d", ErrExhausted, dir, top)
	}
	sort.Slice(o.pending, func(i, j int) bool { return o.pending[i].Seq < o.pending[j].Seq })
	o.next = top + 1
	return o, nil
}

// errTorn marks an item file that a power loss left empty or cut short.
var errTorn = errors.New("torn item")

func readItem(path string, seq uint64) (Item, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Item{}, fmt.Errorf("outbox: %w", err)
	}
	subj, data, ok := bytes.Cut(b, []byte("\n"))
	if !ok || len(subj) == 0 {
		return Item{}, fmt.Errorf("outbox: %s: %w", path, errTorn)
	}
	return Item{Seq: seq, Subject: string(subj), Data: data}, nil
}

// Append numbers a new item, builds it with that number, and stores it
// (not yet synced, see Sync) before returning it. Items are numbered in
// Append order.
func (o *Outbox) Append(build func(seq uint64) (subject string, data []byte, err error)) (Item, error) {
	return o.append(build, false)
}

// AppendHeld is Append for an item announcing a change that is not yet on
// record elsewhere: it is numbered and stored now, so that no crash after
// the change is recorded can lose it, but Pending returns neither it nor
// any later item until Release. Holding is in memory only: a reopened
// outbox returns every item it finds, and its owner, before anything is
// sent, decides whether what a formerly held item announces came true.
func (o *Outbox) AppendHeld(build func(seq uint64) (subject string, data []byte, err error)) (Item, error) {
	return o.append(build, true)
}

// Release lets a held item, and the items after it, be sent.
func (o *Outbox) Release(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.held, seq)
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *Outbox) append(build func(seq uint64) (subject string, data []byte, err error), held bool) (Item, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.exhausted {
		return Item{}, ErrExhausted
	}
	seq := o.next
	subj, data, err := build(seq)
	if err != nil {
		return Item{}, err
	}
	if strings.ContainsAny(subj, "\n") || subj == "" {
		return Item{}, fmt.Errorf("outbox: invalid subject %q", subj)
	}
	buf := make([]byte, 0, len(subj)+1+len(data))
	buf = append(append(append(buf, subj...), '\n'), data...)
	if err := atomicfile.WriteFileNoSync(o.path(seq), buf, 0o600); err != nil {
		return Item{}, fmt.Errorf("outbox: %w", err)
	}
	if seq == math.MaxUint64 {
		o.exhausted = true // next would wrap to 0, below every number used
	} else {
		o.next++
	}
	it := Item{Seq: seq, Subject: subj, Data: data}
	o.pending = append(o.pending, it)
	if held {
		o.held[seq] = struct{}{}
		return it, nil
	}
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return it, nil
}

func (o *Outbox) path(seq uint64) string {
	return filepath.Join(o.dir, fmt.Sprintf("%0*d", nameWidth, seq))
}

// Sync makes items durable: their files and the directory entries naming
// them. The publisher calls it before sending; one journal commit covers a
// whole batch.
func (o *Outbox) Sync(items []Item) error {
	for _, it := range items {
		f, err := os.Open(o.path(it.Seq))
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("outbox: sync %d: %w", it.Seq, err)
		}
	}
	return atomicfile.SyncDir(o.dir)
}

// Pending returns up to max of the oldest unconfirmed items, stopping
// short of the first held one: items go out in order.
func (o *Outbox) Pending(max int) []Item {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(max, len(o.pending))
	if len(o.held) > 0 {
		first := uint64(math.MaxUint64)
		for seq := range o.held {
			first = min(first, seq)
		}
		n = min(n, sort.Search(len(o.pending), func(i int) bool { return o.pending[i].Seq >= first }))
	}
	return append([]Item(nil), o.pending[:n]...)
}

// Len is the number of unconfirmed items.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

// Notify receives a value after an Append or a Release (coalesced).
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Ack removes every item numbered upTo or lower: the bus confirmed them.
func (o *Outbox) Ack(upTo uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := sort.Search(len(o.pending), func(i int) bool { return o.pending[i].Seq > upTo })
	if i == 0 {
		return nil
	}
	// "last" first: once a file is gone its number must stay used.
	if upTo > o.last {
		if err := atomicfile.WriteFile(filepath.Join(o.dir, "last"), []byte(strconv.FormatUint(upTo, 10)), 0o600); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		o.last = upTo
	}
	var errs []error
	for _, it := range o.pending[:i] {
		if err := os.Remove(o.path(it.Seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	o.pending = append(o.pending[:0], o.pending[i:]...)
	return errors.Join(errs...)
}

// Last is the highest sequence number handed out so far (0 if none).
func (o *Outbox) Last() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.exhausted {
		return math.MaxUint64
	}
	return o.next - 1
}

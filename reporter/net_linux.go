package reporter

import (
	"errors"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netReader reads per-interface traffic counters over one rtnetlink socket
// kept for the sampler's life: a link dump is one request, however many
// interfaces there are.
type netReader struct {
	h    *netlink.Handle
	prev map[string][2]uint64 // rx, tx bytes at the previous read
	at   time.Time
}

func newNetReader() (*netReader, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &netReader{h: h}, nil
}

func (r *netReader) read(now time.Time) (map[string]NetStat, error) {
	links, err := r.h.LinkList()
	// An interrupted dump (links changed meanwhile) still lists what it
	// saw; the next sample gets a consistent one.
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	out := make(map[string]NetStat, len(links))
	cur := make(map[string][2]uint64, len(links))
	dt := now.Sub(r.at)
	vals := make(floats, 0, 2*len(links))
	for _, l := range links {
		a := l.Attrs()
		if a == nil || a.Statistics == nil {
			continue
		}
		ns := NetStat{RxBytes: a.Statistics.RxBytes, TxBytes: a.Statistics.TxBytes}
		cur[a.Name] = [2]uint64{ns.RxBytes, ns.TxBytes}
		// A counter below its previous value is a new interface of the
		// same name: no rate until the next sample.
		if p, ok := r.prev[a.Name]; ok && ns.RxBytes >= p[0] && ns.TxBytes >= p[1] {
			ns.RxBps = vals.rate(ns.RxBytes-p[0], dt, 1)
			ns.TxBps = vals.rate(ns.TxBytes-p[1], dt, 1)
		}
		out[a.Name] = ns
	}
	r.prev, r.at = cur, now
	return out, nil
}

func (r *netReader) close() { r.h.Close() }

package reporter

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// LoadMessage is the body of ward.<host>.load. One sample normally goes
// out as one message; when that would exceed the server's max payload the
// instances are split over several messages, the parts, each carrying the
// full host block. All parts of a sample share Seq (and Time); Part counts
// from 1 to Parts, so a consumer knows it has the whole sample when it has
// seen Parts distinct parts of one Seq. Seq starts at 1 when the reporter
// starts and grows by one per sample.
type LoadMessage struct {
	Time      time.Time        `json:"time"`
	Seq       uint64           `json:"seq"`
	Part      int              `json:"part"`
	Parts     int              `json:"parts"`
	Host      Host             `json:"host"`
	Instances []InstanceSample `json:"instances"`
}

// ErrTooLarge reports an instance whose figures alone do not fit in one
// message under the server's max payload.
var ErrTooLarge = errors.New("reporter: does not fit in the max payload")

// EncodeLoad renders s as one or more LoadMessage bodies of at most
// maxPayload bytes each (see LoadMessage for how parts are numbered).
// Instances keep their order. An instance that cannot fit even alone is
// left out with an ErrTooLarge error naming it, and the rest is still
// returned.
func EncodeLoad(s *Sample, seq uint64, maxPayload int) ([][]byte, error) {
	hostJSON, err := json.Marshal(&s.Host)
	if err != nil {
		return nil, fmt.Errorf("reporter: encode host: %w", err)
	}
	timeJSON, err := json.Marshal(s.Time)
	if err != nil {
		return nil, fmt.Errorf("reporter: encode time: %w", err)
	}
	// head renders everything before the instances. Its length depends on
	// the digits of part and parts, so packing assumes the widest they can
	// be (one part per instance), and every real part is no longer.
	head := func(b []byte, part, parts int) []byte {
		b = append(b, `{"time":`...)
		b = append(b, timeJSON...)
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"part":`...)
		b = strconv.AppendInt(b, int64(part), 10)
		b = append(b, `,"parts":`...)
		b = strconv.AppendInt(b, int64(parts), 10)
		b = append(b, `,"host":`...)
		b = append(b, hostJSON...)
		return append(b, `,"instances":[`...)
	}
	const tail = "]}"
	widest := max(1, len(s.Instances))
	overhead := len(head(nil, widest, widest)) + len(tail)
	if overhead > maxPayload {
		return nil, fmt.Errorf("reporter: host block (%d bytes): %w (%d bytes)", overhead, ErrTooLarge, maxPayload)
	}

	var errs []error
	items := make([][]byte, 0, len(s.Instances))
	single := len(head(nil, 1, 1)) + len(tail)
	for i := range s.Instances {
		item, err := json.Marshal(&s.Instances[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("reporter: encode instance %q: %w", s.Instances[i].ID, err))
			continue
		}
		if overhead+len(item) > maxPayload {
			errs = append(errs, fmt.Errorf("reporter: instance %q (%d bytes with the host block): %w (%d bytes)", s.Instances[i].ID, overhead+len(item), ErrTooLarge, maxPayload))
			continue
		}
		if len(items) > 0 {
			single++ // the comma
		}
		single += len(item)
		items = append(items, item)
	}

	// The usual case, exactly: everything fits in one message.
	parts := [][][]byte{items}
	if single > maxPayload {
		// Pack greedily into parts, in order.
		parts = parts[:0]
		var cur [][]byte
		size := overhead
		for _, item := range items {
			need := len(item)
			if len(cur) > 0 {
				need++ // the comma
			}
			if size+need > maxPayload {
				parts = append(parts, cur)
				cur, size, need = nil, overhead, len(item)
			}
			cur = append(cur, item)
			size += need
		}
		parts = append(parts, cur)
	}

	out := make([][]byte, len(parts))
	for p, items := range parts {
		n := overhead
		for _, it := range items {
			n += len(it) + 1
		}
		b := head(make([]byte, 0, n), p+1, len(parts))
		for i, it := range items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, it...)
		}
		out[p] = append(b, tail...)
	}
	return out, errors.Join(errs...)
}

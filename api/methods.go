package api

import (
	"context"
	"sort"
	"strconv"
	"strings"
)

// API is the set of requests both transports serve; *Agent implements it.
type API interface {
	Start(context.Context, Request) (*Instance, error)
	Stop(context.Context, StopRequest) (*Instance, error)
	Limit(context.Context, LimitRequest) (*Instance, error)
	Info(context.Context, InfoRequest) (*Instance, error)
	List(context.Context) (*List, error)
}

// Method is one request of the API as a transport sees it: a name (the bus
// endpoint, the socket path) and a call that decodes a raw body strictly
// (see Decode) and dispatches it. Both transports serve exactly Methods, so
// they cannot drift apart in what they accept.
type Method struct {
	Name string
	Call func(ctx context.Context, api API, body []byte) (any, error)
}

// Methods lists the API's requests: start, stop, limit, info, list.
var Methods = []Method{
	{"start", func(ctx context.Context, api API, b []byte) (any, error) {
		var req Request
		if err := Decode(b, &req); err != nil {
			return nil, err
		}
		return api.Start(ctx, req)
	}},
	{"stop", func(ctx context.Context, api API, b []byte) (any, error) {
		var req StopRequest
		if err := Decode(b, &req); err != nil {
			return nil, err
		}
		return api.Stop(ctx, req)
	}},
	{"limit", func(ctx context.Context, api API, b []byte) (any, error) {
		var req LimitRequest
		if err := Decode(b, &req); err != nil {
			return nil, err
		}
		return api.Limit(ctx, req)
	}},
	{"info", func(ctx context.Context, api API, b []byte) (any, error) {
		var req InfoRequest
		if err := Decode(b, &req); err != nil {
			return nil, err
		}
		return api.Info(ctx, req)
	}},
	{"list", func(ctx context.Context, api API, b []byte) (any, error) {
		var req ListRequest
		// An empty body is an empty request ({}), as `nats req ward.h.list ''` sends.
		if len(b) > 0 {
			if err := Decode(b, &req); err != nil {
				return nil, err
			}
		}
		after, err := parseCursor(req.After)
		if err != nil {
			return nil, err
		}
		if req.Limit < 0 {
			return nil, invalid("limit", "must be 0 (no limit) or more, got %d", req.Limit)
		}
		l, err := api.List(ctx)
		if err != nil {
			return nil, err
		}
		return page(l, after, req.Limit), nil
	}},
}

// cursor is a position in a list: the sort key of the last instance of a
// page.
type cursor struct {
	name  string
	index int
	id    string
}

func (c cursor) String() string { return c.name + "/" + strconv.Itoa(c.index) + "/" + c.id }

func (c cursor) less(o cursor) bool {
	if c.name != o.name {
		return c.name < o.name
	}
	if c.index != o.index {
		return c.index < o.index
	}
	return c.id < o.id
}

// parseCursor reads a List.Next; "" is the start of the list.
func parseCursor(s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	// Names and ids cannot hold '/' (see validateID).
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return nil, invalid("after", "not a list position (the next of an earlier reply): %q", s)
	}
	index, err := strconv.Atoi(parts[1])
	if err != nil || index < 0 {
		return nil, invalid("after", "not a list position (the next of an earlier reply): %q", s)
	}
	return &cursor{name: parts[0], index: index, id: parts[2]}, nil
}

// page cuts l (in list order) to the instances after after, at most limit
// of them (0: all).
func page(l *List, after *cursor, limit int) *List {
	all := l.Instances
	if after != nil {
		i := sort.Search(len(all), func(i int) bool {
			return after.less(cursor{all[i].Name, all[i].Index, all[i].ID})
		})
		all = all[i:]
	}
	out := &List{Instances: all}
	if limit > 0 && len(all) > limit {
		out.Instances = all[:limit]
		last := all[limit-1]
		out.Next = cursor{last.Name, last.Index, last.ID}.String()
	}
	return out
}

package api

import (
	"context"
	"strconv"
	"strings"
)

// API is the set of requests both transports serve; *Agent implements it.
type API interface {
	Start(context.Context, Request) (*Instance, error)
	Stop(context.Context, StopRequest) (*Instance, error)
	Limit(context.Context, LimitRequest) (*Instance, error)
	Info(context.Context, InfoRequest) (*Instance, error)
	List(context.Context, ListRequest) (*List, error)
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
		if err := req.Validate(); err != nil {
			return nil, err
		}
		return api.List(ctx, req)
	}},
}

// Validate checks a list request: a limit of 0 or more, and an after that
// is the next of an earlier reply.
func (r ListRequest) Validate() error {
	if r.Limit < 0 {
		return invalid("limit", "must be 0 (no limit) or more, got %d", r.Limit)
	}
	_, err := ParseCursor(r.After)
	return err
}

// Cursor is a position in a list: the sort key of the last instance of a
// page. Lists are ordered by name, index (numerically) and id.
type Cursor struct {
	Name  string
	Index int
	ID    string
}

// CursorOf is the position of inst.
func CursorOf(inst *Instance) Cursor { return Cursor{inst.Name, inst.Index, inst.ID} }

func (c Cursor) String() string { return c.Name + "/" + strconv.Itoa(c.Index) + "/" + c.ID }

// Less reports whether c comes before o in a list.
func (c Cursor) Less(o Cursor) bool {
	if c.Name != o.Name {
		return c.Name < o.Name
	}
	if c.Index != o.Index {
		return c.Index < o.Index
	}
	return c.ID < o.ID
}

// ParseCursor reads a List.Next; "" is the start of the list (nil).
func ParseCursor(s string) (*Cursor, error) {
	if s == "" {
		return nil, nil
	}
	// Names and ids cannot hold '/' (see the agent's validation).
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return nil, invalid("after", "not a list position (the next of an earlier reply): %q", s)
	}
	index, err := strconv.Atoi(parts[1])
	if err != nil || index < 0 {
		return nil, invalid("after", "not a list position (the next of an earlier reply): %q", s)
	}
	return &Cursor{Name: parts[0], Index: index, ID: parts[2]}, nil
}

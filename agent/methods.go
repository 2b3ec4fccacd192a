package agent

import "context"

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
		// An empty body is an empty request ({}), as `nats req ward.h.list ''` sends.
		if len(b) > 0 {
			if err := Decode(b, &struct{}{}); err != nil {
				return nil, err
			}
		}
		return api.List(ctx)
	}},
}

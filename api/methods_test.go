package api

import (
	"context"
	"errors"
	"testing"
)

// listAPI records the list request it is given.
type listAPI struct{ got *ListRequest }

func (listAPI) Start(context.Context, Request) (*Instance, error)      { return nil, ErrNotFound }
func (listAPI) Stop(context.Context, StopRequest) (*Instance, error)   { return nil, ErrNotFound }
func (listAPI) Limit(context.Context, LimitRequest) (*Instance, error) { return nil, ErrNotFound }
func (listAPI) Info(context.Context, InfoRequest) (*Instance, error)   { return nil, ErrNotFound }
func (a *listAPI) List(_ context.Context, req ListRequest) (*List, error) {
	a.got = &req
	return &List{}, nil
}

func callList(t *testing.T, api API, body string) (*List, error) {
	t.Helper()
	for _, m := range Methods {
		if m.Name == "list" {
			v, err := m.Call(context.Background(), api, []byte(body))
			if err != nil {
				return nil, err
			}
			return v.(*List), nil
		}
	}
	t.Fatal("no list method")
	return nil, nil
}

// The list method hands the implementation a valid request — an empty
// body is the empty request — and refuses a bad one, naming the field,
// without calling it. (The paging itself: agent's TestListPages.)
func TestListRequests(t *testing.T) {
	for body, want := range map[string]ListRequest{
		"":                       {},
		"{}":                     {},
		`{"limit":7}`:            {Limit: 7},
		`{"limit":3,"after":""}`: {Limit: 3},
		`{"after":"a/10/a10"}`:   {After: "a/10/a10"},
	} {
		api := &listAPI{}
		if _, err := callList(t, api, body); err != nil || api.got == nil || *api.got != want {
			t.Errorf("list %q: %v, handed %+v, want %+v", body, err, api.got, want)
		}
	}
	for body, field := range map[string]string{
		`{"limit":-1}`:         "limit",
		`{"after":"a"}`:        "after",
		`{"after":"a/x/a1"}`:   "after",
		`{"after":"a/-1/a1"}`:  "after",
		`{"after":"a/1/a1/x"}`: "after",
		`{"limit":"3"}`:        "limit",
		`{"page":2}`:           "page",
		`{"after":1}`:          "after",
	} {
		api := &listAPI{}
		_, err := callList(t, api, body)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidArgument || e.Field != field {
			t.Errorf("list %s: %v, want invalid_argument on %s", body, err, field)
		}
		if api.got != nil {
			t.Errorf("list %s: refused, but the implementation was called", body)
		}
	}
}

func TestCursorRoundTrip(t *testing.T) {
	c := Cursor{Name: "shop-web", Index: 10, ID: "7f3c"}
	got, err := ParseCursor(c.String())
	if err != nil || *got != c {
		t.Fatalf("ParseCursor(%q) = %+v, %v", c.String(), got, err)
	}
	// Index 10 after index 9: the order is numeric, not textual.
	if !(Cursor{"a", 9, "x"}).Less(Cursor{"a", 10, "a"}) {
		t.Fatal("a/9 is not before a/10")
	}
}

package api

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// listAPI serves a fixed list, in list order.
type listAPI struct{ l List }

func (listAPI) Start(context.Context, Request) (*Instance, error)      { return nil, ErrNotFound }
func (listAPI) Stop(context.Context, StopRequest) (*Instance, error)   { return nil, ErrNotFound }
func (listAPI) Limit(context.Context, LimitRequest) (*Instance, error) { return nil, ErrNotFound }
func (listAPI) Info(context.Context, InfoRequest) (*Instance, error)   { return nil, ErrNotFound }
func (a *listAPI) List(context.Context) (*List, error) {
	return &List{Instances: append([]Instance(nil), a.l.Instances...)}, nil
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

// A host's list can outgrow one bus message: it pages, and the pages
// together are the list, each instance once, in order — even when the
// instance a page ended on is forgotten before the next page is asked for.
func TestListPages(t *testing.T) {
	api := &listAPI{}
	// Index 10 after index 9: the order is numeric, not textual.
	for _, k := range []struct {
		name  string
		index int
	}{{"a", 0}, {"a", 1}, {"a", 9}, {"a", 10}, {"b", 0}, {"b", 2}, {"c", 0}} {
		api.l.Instances = append(api.l.Instances, Instance{ID: fmt.Sprintf("%s%d", k.name, k.index), Name: k.name, Index: k.index})
	}
	for _, body := range []string{"", "{}", `{"limit":0}`, `{"limit":7}`, `{"limit":100}`} {
		l, err := callList(t, api, body)
		if err != nil || len(l.Instances) != 7 || l.Next != "" {
			t.Fatalf("list %q: %v, %+v", body, err, l)
		}
	}
	var got []string
	body := `{"limit":3}`
	for pages := 0; ; pages++ {
		l, err := callList(t, api, body)
		if err != nil {
			t.Fatalf("list %s: %v", body, err)
		}
		if pages > 3 || len(l.Instances) > 3 {
			t.Fatalf("list %s: %d instances, page %d", body, len(l.Instances), pages)
		}
		for _, in := range l.Instances {
			got = append(got, in.ID)
		}
		if l.Next == "" {
			break
		}
		if pages == 0 {
			// The last instance of the first page goes away.
			api.l.Instances = append(api.l.Instances[:2], api.l.Instances[3:]...)
		}
		body = fmt.Sprintf(`{"limit":3,"after":%q}`, l.Next)
	}
	if fmt.Sprint(got) != "[a0 a1 a9 a10 b0 b2 c0]" {
		t.Fatalf("pages gave %v", got)
	}

	for body, field := range map[string]string{
		`{"limit":-1}`:           "limit",
		`{"after":"a"}`:          "after",
		`{"after":"a/x/a1"}`:     "after",
		`{"after":"a/-1/a1"}`:    "after",
		`{"after":"a/1/a1/x"}`:   "after",
		`{"limit":"3"}`:          "limit",
		`{"page":2}`:             "page",
		`{"after":1}`:            "after",
		`{"limit":3,"after":""}`: "",
	} {
		_, err := callList(t, api, body)
		var e *Error
		if field == "" {
			if err != nil {
				t.Errorf("list %s: %v", body, err)
			}
			continue
		}
		if !errors.As(err, &e) || e.Code != CodeInvalidArgument || e.Field != field {
			t.Errorf("list %s: %v, want invalid_argument on %s", body, err, field)
		}
	}
}

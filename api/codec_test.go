package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

type inner struct {
	Known int `json:"known"`
}

type embedded struct {
	Promoted string `json:"promoted"`
}

// raw unmarshals itself: the walk must not judge its keys.
type raw struct{ keys int }

func (r *raw) UnmarshalJSON(b []byte) error {
	var m map[string]any
	err := json.Unmarshal(b, &m)
	r.keys = len(m)
	return err
}

type decodeTarget struct {
	embedded
	Name    string            `json:"name"`
	Untag   int               // known as "Untag"
	Skipped int               `json:"-"`
	Inner   inner             `json:"inner"`
	Ptr     *inner            `json:"ptr,omitempty"`
	List    []inner           `json:"list"`
	Map     map[string]inner  `json:"map"`
	Env     map[string]string `json:"env"`
	Any     any               `json:"any"`
	Raw     raw               `json:"raw"`
	hidden  int
}

func TestDecodeUnknownField(t *testing.T) {
	for _, tc := range []struct {
		in    string
		field string // "" when the request decodes
	}{
		{`{"name":"a","inner":{"known":1},"ptr":{"known":2},"list":[{"known":3}],"map":{"k":{"known":4}},"env":{"ANY_KEY":"v"},"promoted":"p","Untag":1}`, ""},
		{`{"NAME":"a","Inner":{"KNOWN":1}}`, ""}, // encoding/json matches names case-insensitively
		{`{"any":{"whatever":{"deep":[1,{"x":2}]}},"raw":{"free":1}}`, ""},
		{`{"ptr":null,"inner":{"known":1e400}}`, "inner.known"}, // a type error, reported as such
		{`{"extra":true}`, "extra"},
		{`{"Skipped":1}`, "Skipped"},
		{`{"hidden":1}`, "hidden"},
		{`{"name":"a","later":1,"inner":{"nope":1}}`, "later"}, // the first in the request's order
		{`{"inner":{"known":1,"nope":1}}`, "inner.nope"},
		{`{"ptr":{"nope":1}}`, "ptr.nope"},
		{`{"list":[{"known":1},{"nope":1}]}`, "list[1].nope"},
		{`{"map":{"k":{"nope":1}}}`, "map.k.nope"},
		{`{"embedded":{}}`, "embedded"},
	} {
		var v decodeTarget
		err := Decode([]byte(tc.in), &v)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		e, ok := errors.AsType[*Error](err)
		if !ok || e.Code != CodeInvalidArgument || e.Field != tc.field {
			t.Errorf("%s: %v, want invalid_argument on %q", tc.in, err, tc.field)
		}
	}
}

// TestDecodeRequests: the contract's own types refuse unknown fields at any
// depth and name them by path.
func TestDecodeRequests(t *testing.T) {
	for _, tc := range []struct {
		in    string
		v     any
		field string
	}{
		{`{"id":"x","name":"y","command":["true"],"extra":true}`, &Request{}, "extra"},
		{`{"name":"y","limits":{"memroy_bytes":1}}`, &Request{}, "limits.memroy_bytes"},
		{`{"name":"y","health_check":{"type":"tcp","intervall_ms":1}}`, &Request{}, "health_check.intervall_ms"},
		{`{"id":"x","timeout":1}`, &StopRequest{}, "timeout"},
		{`{"id":"x","limits":{"pid":1}}`, &LimitRequest{}, "limits.pid"},
		{`{"id":"x","name":"y"}`, &InfoRequest{}, "name"},
		{`{"name":"y","limits":{"pids":64},"health_check":{"type":"http","path":"/"},"env":{"A":"b"},"routes":["a.example"]}`, &Request{}, ""},
	} {
		err := Decode([]byte(tc.in), tc.v)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeInvalidArgument || e.Field != tc.field {
			t.Errorf("%s: %v, want invalid_argument on %q", tc.in, err, tc.field)
		}
	}
}

// FuzzDecodeStrict: Decode accepts exactly what encoding/json's own strict
// mode (DisallowUnknownFields, nothing after the value) accepts, for every
// request type of the contract.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"id":"x","name":"y","command":["true"],"env":{"A":"b"},"limits":{"pids":2},"port":0,"routes":["a"],"health_check":{"type":"tcp"}}`,
		`{"id":"x","extra":1}`, `{"limits":{"nope":1}}`, `{"health_check":{"Type":"tcp","x":1}}`, `{"ID":"x","TIMEOUT_MS":1}`,
		`{"limits":{"pids":1e400},"x":1}`, `{"id":"x"} {}`, `[]`, `null`, `{"env":{"x":{"y":1}}}`,
	} {
		f.Add([]byte(s))
	}
	strict := func(data []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return err
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return errors.New("trailing data")
		}
		return nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxRequestBytes {
			return
		}
		for _, mk := range []func() any{
			func() any { return new(Request) }, func() any { return new(StopRequest) },
			func() any { return new(LimitRequest) }, func() any { return new(InfoRequest) },
			func() any { return new(ListRequest) },
		} {
			got, want := Decode(data, mk()), strict(data, mk())
			if (got == nil) != (want == nil) {
				t.Fatalf("%T %q: Decode says %v, strict encoding/json %v", mk(), data, got, want)
			}
			if got != nil && !errors.Is(got, ErrInvalidArgument) {
				t.Fatalf("%T %q: %v is not invalid_argument", mk(), data, got)
			}
		}
	})
}

package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// MaxRequestBytes bounds a request body on every transport.
const MaxRequestBytes = 1 << 20

// Decode parses one JSON request strictly: unknown fields, trailing data,
// wrong types and oversized bodies are refused as invalid_argument naming
// what is wrong. Both transports decode through it, so they refuse alike.
// A request both malformed in a field's type and carrying an unknown field
// is refused for the type.
func Decode(data []byte, v any) error {
	if len(data) > MaxRequestBytes {
		return invalid("", "request is %d bytes, at most %d", len(data), MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("", "trailing data after the JSON request")
	}
	return unknownField(data, reflect.TypeOf(v))
}

// unknownField refuses the first key, in the request's order, that no field
// of t takes, naming it by its whole path ("limits.memroy_bytes"). It walks
// the keys itself instead of leaving it to DisallowUnknownFields because
// encoding/json reports an unknown field only as text ("json: unknown field
// %q"), with no type, sentinel or path; it runs after a successful Decode,
// so data is known to be well-formed JSON of the right shape.
func unknownField(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // numbers are skipped, never parsed: 1e400 is no error here
	path, found, err := walk(dec, t, "")
	switch {
	case err != nil:
		return decodeError(err)
	case found && path == "":
		return invalid("", `unknown field ""`)
	case found:
		return invalid(path, "unknown field")
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// walk consumes one JSON value from dec and returns the path of its first
// key that type t has no field for, and whether there is one (a key may be
// ""). A nil t (an interface, a type that unmarshals itself) takes any key.
func walk(dec *json.Decoder, t reflect.Type, path string) (string, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", false, err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return "", false, nil
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType)) {
		t = nil
	}
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct && delim == '{' {
		fields = jsonFields(t, nil)
	}
	for i := 0; dec.More(); i++ {
		var elem reflect.Type
		sub := path
		switch delim {
		case '{':
			tok, err := dec.Token()
			if err != nil {
				return "", false, err
			}
			key, _ := tok.(string)
			sub = key
			if path != "" {
				sub = path + "." + key
			}
			switch {
			case fields != nil:
				if elem, ok = lookupField(fields, key); !ok {
					return sub, true, nil
				}
			case t != nil && t.Kind() == reflect.Map:
				elem = t.Elem()
			}
		case '[':
			sub = fmt.Sprintf("%s[%d]", path, i)
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
		}
		if p, found, err := walk(dec, elem, sub); found || err != nil {
			return p, found, err
		}
	}
	_, err = dec.Token() // the closing delimiter
	return "", false, err
}

// jsonFields adds to m (made if nil) the JSON names of struct t's fields,
// with their types, by encoding/json's rules: exported fields by their tag
// name or Go name, "-" skipped, an untagged embedded struct's fields
// promoted. (Where encoding/json drops two promoted fields of the same
// name as ambiguous, both count as known here: the walk only errs towards
// accepting.)
func jsonFields(t reflect.Type, m map[string]reflect.Type) map[string]reflect.Type {
	if m == nil {
		m = make(map[string]reflect.Type, t.NumField())
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				jsonFields(et, m)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

// lookupField finds key the way encoding/json does: the exact name first,
// then any name equal under Unicode case folding.
func lookupField(fields map[string]reflect.Type, key string) (reflect.Type, bool) {
	if t, ok := fields[key]; ok {
		return t, true
	}
	for name, t := range fields {
		if strings.EqualFold(name, key) {
			return t, true
		}
	}
	return nil, false
}

func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "request"
		}
		return invalid(field, "must be a JSON %s, got %s", jsonKind(te.Type.Kind().String()), te.Value)
	case errors.As(err, &se):
		return invalid("", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "empty or truncated JSON request")
	}
	return invalid("", "invalid JSON request: %v", err)
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "uint64", "int32", "uint32", "float64":
		return "number (" + k + ")"
	case "slice":
		return "array"
	case "map", "struct", "ptr":
		return "object"
	}
	return k
}

// ErrorBody is the JSON body of a refused request: {"error": {...}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Body renders err as the contract's error body.
func Body(err error) []byte {
	b, _ := json.Marshal(ErrorBody{Error: AsError(err)})
	return b
}

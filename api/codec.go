package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// MaxRequestBytes bounds a request body on every transport.
const MaxRequestBytes = 1 << 20

// Decode parses one JSON request strictly: unknown fields, trailing data,
// wrong types and oversized bodies are refused as invalid_argument naming
// what is wrong. Both transports decode through it, so they refuse alike.
func Decode(data []byte, v any) error {
	if len(data) > MaxRequestBytes {
		return invalid("", "request is %d bytes, at most %d", len(data), MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("", "trailing data after the JSON request")
	}
	return nil
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
	msg := err.Error()
	if f, ok := bytes.CutPrefix([]byte(msg), []byte("json: unknown field ")); ok {
		return invalid(string(bytes.Trim(f, `"`)), "unknown field")
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

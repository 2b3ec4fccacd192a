package api

import (
	"errors"
	"fmt"
)

// Code classifies an error for the transports; the names are the contract's.
type Code string

const (
	CodeInvalidArgument   Code = "invalid_argument"
	CodeNotFound          Code = "not_found"
	CodeConflict          Code = "conflict"
	CodeResourceExhausted Code = "resource_exhausted"
	CodeUnavailable       Code = "unavailable"
	CodeInternal          Code = "internal"
)

// Error is a refused request. Field names the request field at fault, in
// its JSON spelling ("limits.memory_bytes"), when there is one.
type Error struct {
	Code    Code   `json:"code"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Is matches the sentinel of the same code, so callers can write
// errors.Is(err, api.ErrNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Field == "" && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrInvalidArgument   = &Error{Code: CodeInvalidArgument}
	ErrNotFound          = &Error{Code: CodeNotFound}
	ErrConflict          = &Error{Code: CodeConflict}
	ErrResourceExhausted = &Error{Code: CodeResourceExhausted}
	ErrUnavailable       = &Error{Code: CodeUnavailable}
	ErrInternal          = &Error{Code: CodeInternal}
)

func invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Internal wraps a failure of ward or the kernel — not of the request —
// as an internal error. The cause stays reachable with errors.Unwrap (and
// errors.Is) for logs; the client sees its message. A refusal (*Error) is
// returned as it is.
func Internal(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &internalError{e: Error{Code: CodeInternal, Message: err.Error()}, cause: err}
}

type internalError struct {
	e     Error
	cause error
}

func (e *internalError) Error() string        { return e.e.Error() }
func (e *internalError) Is(target error) bool { return e.e.Is(target) }
func (e *internalError) Unwrap() error        { return e.cause }

// AsError returns err as the *Error a transport should send: refusals as
// they are, anything else as internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ie *internalError
	if errors.As(err, &ie) {
		return &ie.e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

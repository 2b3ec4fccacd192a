package agent

import (
	"fmt"

	"github.com/hostward/ward/api"
)

func invalid(field, format string, args ...any) *api.Error {
	return &api.Error{Code: api.CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

func notFound(id string) *api.Error {
	return &api.Error{Code: api.CodeNotFound, Field: "id", Message: fmt.Sprintf("no instance %q", id)}
}

package agent

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/hostward/ward/nsinit"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// goroutine the agent starts is joined by Run or Close.
func TestMain(m *testing.M) {
	nsinit.ServeSelf()
	goleak.VerifyTestMain(m)
}

package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

// Terminal sequences (xterm, understood by every terminal in use): the
// alternate screen keeps the user's scrollback intact, and the cursor is
// hidden so it does not flicker across the table on each refresh.
const (
	enterScreen = "\x1b[?1049h\x1b[?25l"
	leaveScreen = "\x1b[?25h\x1b[?1049l"
	cursorHome  = "\x1b[H"
	eraseLine   = "\x1b[2K"
)

// withFd runs fn on f's descriptor without f.Fd(), which would switch a
// descriptor that is shared with the shell to blocking mode.
func withFd(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func isTerminal(f *os.File) bool {
	return withFd(f, func(fd int) error {
		_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		return err
	}) == nil
}

// screen is a terminal set up for the live table: input (when it is a
// terminal) without line editing, echo or signal keys, so each key arrives
// at once and Ctrl-C is a key like q; output on the alternate screen with
// the cursor hidden. Close puts both back as they were.
type screen struct {
	in, out *os.File
	saved   *unix.Termios // nil: input is not a terminal, nothing to restore
	once    sync.Once
	err     error
}

func openScreen(in, out *os.File) (*screen, error) {
	s := &screen{in: in, out: out}
	if in != nil {
		var t *unix.Termios
		err := withFd(in, func(fd int) error {
			var err error
			t, err = unix.IoctlGetTermios(fd, unix.TCGETS)
			return err
		})
		if err == nil {
			saved := *t
			t.Lflag &^= unix.ICANON | unix.ECHO | unix.ISIG | unix.IEXTEN
			t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
			if err := withFd(in, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS, t) }); err != nil {
				return nil, err
			}
			s.saved = &saved
		}
	}
	if _, err := io.WriteString(out, enterScreen); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close leaves the alternate screen, shows the cursor and restores the
// input's terminal attributes. It may be called more than once (a deferred
// call on every way out, a panic included).
func (s *screen) Close() error {
	s.once.Do(func() {
		_, werr := io.WriteString(s.out, leaveScreen)
		var terr error
		if s.saved != nil {
			// TCSETS, not TCSETSW: a stopped output (Ctrl-S) must not
			// keep the terminal in cbreak mode forever.
			terr = withFd(s.in, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS, s.saved) })
		}
		s.err = errors.Join(terr, werr)
	})
	return s.err
}

// size is the output's size in columns and rows; 80×24 when the terminal
// does not say (a pty nobody sized).
func (s *screen) size() (width, height int) {
	width, height = 80, 24
	withFd(s.out, func(fd int) error {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err == nil && ws.Col > 0 && ws.Row > 0 {
			width, height = int(ws.Col), int(ws.Row)
		}
		return err
	})
	return width, height
}

// draw paints lines over the whole screen in one write: every row erased
// before it is written (erasing after would take the last column of a
// full-width row with it), no newline after the last row (it would scroll).
func (s *screen) draw(lines []string, height int) error {
	var b strings.Builder
	b.WriteString(cursorHome)
	for i := range height {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(eraseLine)
		if i < len(lines) {
			b.WriteString(lines[i])
		}
	}
	_, err := io.WriteString(s.out, b.String())
	return err
}

// readKeys sends the keys typed on in until it fails or done closes.
func readKeys(in *os.File, keys chan<- byte, done <-chan struct{}) {
	buf := make([]byte, 64)
	for {
		n, err := in.Read(buf)
		if err != nil {
			return
		}
		for _, k := range keysIn(buf[:n]) {
			select {
			case keys <- k:
			case <-done:
				return
			}
		}
	}
}

// topLive runs the live table on out until q, Ctrl-C, SIGINT, SIGTERM or
// SIGHUP, and leaves the terminal as it found it on every way out.
func topLive(c *localapi.Client, opts topOptions, in, out *os.File) error {
	if in != nil && !isTerminal(in) {
		in = nil
	}
	scr, err := openScreen(in, out)
	if err != nil {
		return err
	}
	defer scr.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGWINCH)
	defer signal.Stop(sigs)

	done := make(chan struct{})
	defer close(done)
	keys := make(chan byte, 16)
	if in != nil {
		go readKeys(in, keys, done)
	}

	// Lists run beside the loop, so keys and resizes are answered while
	// the agent is slow; a tick while one is out starts no second one.
	type listed struct {
		l   *api.List
		err error
		at  time.Time
	}
	results := make(chan listed, 1)
	inFlight := false
	// Long enough for a busy agent, short enough that a hung one shows as
	// an error rather than a frozen table.
	timeout := min(max(opts.interval, 2*time.Second), 10*time.Second)
	refresh := func() {
		if inFlight {
			return
		}
		inFlight = true
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			l, err := c.List(ctx)
			results <- listed{l, err, time.Now()}
		}()
	}
	tick := time.NewTicker(opts.interval)
	defer tick.Stop()

	frame := topFrame{Agent: opts.socket, Interval: opts.interval}
	key := opts.sort
	ready := false // nothing is drawn before the first answer
	draw := func() error {
		if !ready {
			return nil
		}
		w, h := scr.size()
		return scr.draw(renderTop(frame, key, w, h), h)
	}

	refresh()
	for {
		var err error
		select {
		case r := <-results:
			inFlight, ready = false, true
			if r.err != nil {
				frame.Err = r.err
			} else {
				frame.Instances, frame.Err, frame.LastOK = r.l.Instances, nil, r.at
			}
			err = draw()
		case <-tick.C:
			refresh()
		case k := <-keys:
			switch k {
			case 'c':
				key = sortCPU
			case 'm':
				key = sortMem
			case 'n':
				key = sortName
			case 'q', 0x03: // Ctrl-C: ISIG is off, it arrives as a key
				return nil
			default:
				continue
			}
			err = draw()
		case s := <-sigs:
			if s != unix.SIGWINCH {
				return nil
			}
			err = draw()
		}
		if err != nil {
			return err
		}
	}
}

package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/localapi"
)

// sortKey orders the rows of `ward top`.
type sortKey string

const (
	sortCPU  sortKey = "cpu"
	sortMem  sortKey = "mem"
	sortName sortKey = "name"
)

func parseSortKey(s string) (sortKey, error) {
	switch k := sortKey(s); k {
	case sortCPU, sortMem, sortName:
		return k, nil
	}
	return "", fmt.Errorf("--sort: want cpu, mem or name, not %q", s)
}

// topOptions are the parsed flags of `ward top`.
type topOptions struct {
	socket   string
	sort     sortKey
	interval time.Duration
	once     bool
}

func runTop(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("top", "[--sort cpu|mem|name] [--interval 1s] [--once]", stderr)
	socket := socketFlag(fs)
	sortBy := fs.String("sort", string(sortCPU), "order rows by cpu, mem or name (keys c, m, n)")
	interval := fs.Duration("interval", time.Second, "time between refreshes")
	once := fs.Bool("once", false, "print one snapshot and exit (also when stdout is not a terminal)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	key, err := parseSortKey(*sortBy)
	if err != nil {
		return usagef("%v", err)
	}
	// Below this the refresh is only load on the agent: its CPU figures
	// move at most once a second anyway.
	if *interval < 100*time.Millisecond {
		return usagef("--interval: want at least 100ms, not %s", *interval)
	}
	opts := topOptions{socket: *socket, sort: key, interval: *interval, once: *once}
	c := localapi.NewClient(opts.socket)
	if out, ok := stdout.(*os.File); ok && !opts.once && isTerminal(out) {
		return topLive(c, opts, os.Stdin, out)
	}
	l, err := c.List(context.Background())
	if err != nil {
		return err
	}
	f := topFrame{Agent: opts.socket, Instances: l.Instances}
	for _, line := range renderTop(f, opts.sort, 0, 0) {
		if _, err := fmt.Fprintln(stdout, line); err != nil {
			return err
		}
	}
	return nil
}

// topFrame is what one screen of `ward top` shows.
type topFrame struct {
	Agent     string         // the socket the CLI talks to
	Instances []api.Instance // from the last list that succeeded
	Err       error          // the last refresh failed: why
	LastOK    time.Time      // when Instances were listed; zero: never
	Interval  time.Duration  // live mode: the refresh period (0: a snapshot)
}

// renderTop lays out a frame for a width × height screen: a header line
// with host totals, an error line when the last refresh failed, and the
// table. A width or height of 0 means unbounded (a plain-text snapshot).
func renderTop(f topFrame, key sortKey, width, height int) []string {
	var lines []string
	lines = append(lines, sanitize(topHeader(f, key)))
	if f.Err != nil {
		msg := "error: " + f.Err.Error()
		if f.Interval > 0 {
			msg += "; retrying every " + f.Interval.String()
		}
		if !f.LastOK.IsZero() {
			msg += "; table from " + f.LastOK.Local().Format(time.TimeOnly)
		}
		lines = append(lines, sanitize(msg))
	}
	rows := height
	if height > 0 {
		rows = height - len(lines)
		if rows <= 0 {
			return clipLines(lines[:height], width)
		}
	}
	lines = append(lines, renderTable(f.Instances, key, width, rows)...)
	return clipLines(lines, width)
}

// topHeader is the first line: the agent, how many instances run of how
// many it knows, and what the running ones use together.
func topHeader(f topFrame, key sortKey) string {
	var running int
	var cpu float64
	var mem uint64
	var cpuKnown, memKnown bool
	for _, in := range f.Instances {
		if in.State == api.StateRunning {
			running++
		}
		if v := in.Usage.CPUPct; v != nil {
			cpu, cpuKnown = cpu+*v, true
		}
		if v := in.Usage.MemoryBytes; v != nil {
			mem, memKnown = mem+*v, true
		}
	}
	cpuS, memS := "-", "-"
	if cpuKnown {
		cpuS = strconv.FormatFloat(cpu, 'f', 1, 64) + "%"
	}
	if memKnown {
		memS = formatSize(mem)
	}
	h := fmt.Sprintf("agent %s  %d running of %d  cpu %s  mem %s  sort %s",
		f.Agent, running, len(f.Instances), cpuS, memS, key)
	if f.Interval > 0 {
		h += "  keys: c m n q"
	}
	return h
}

// A column of the table. Columns with a minimum give up width, down to
// it, when the screen is too narrow, in shrink order; what is still too
// wide is cut at the screen's edge.
type topColumn struct {
	title  string
	right  bool
	min    int
	shrink int // 0: never; lower goes first
	cell   func(*api.Instance) string
}

var topColumns = []topColumn{
	{title: "ID", min: 6, shrink: 2, cell: func(in *api.Instance) string { return in.ID }},
	{title: "NAME", min: 6, shrink: 1, cell: func(in *api.Instance) string {
		return in.Name + "/" + strconv.Itoa(in.Index)
	}},
	{title: "STATE", cell: func(in *api.Instance) string { return string(in.State) }},
	{title: "CPU%", right: true, cell: func(in *api.Instance) string { return optPct(in.Usage.CPUPct) }},
	{title: "MEM/LIMIT", right: true, cell: func(in *api.Instance) string {
		return ratio(in.Usage.MemoryBytes, in.Limits.MemoryBytes)
	}},
	{title: "DISK/LIMIT", right: true, cell: func(in *api.Instance) string {
		return ratio(in.Usage.DiskBytes, in.Limits.DiskBytes)
	}},
	{title: "PIDS", right: true, cell: func(in *api.Instance) string { return optU(in.Usage.Pids) }},
	{title: "HEALTH", cell: func(in *api.Instance) string {
		if in.Health == nil {
			return "-"
		}
		return *in.Health
	}},
}

const colGap = 2

// renderTable sorts the instances by key and lays them out as a header row
// and one row per instance, fitted to width columns and rows lines (0:
// unbounded). When rows cut the table short, its last line says how many
// instances did not fit. The instances are not modified.
func renderTable(instances []api.Instance, key sortKey, width, rows int) []string {
	if rows < 0 {
		return nil
	}
	sorted := sortInstances(instances, key)
	cells := make([][]string, len(sorted))
	widths := make([]int, len(topColumns))
	for i, c := range topColumns {
		widths[i] = utf8.RuneCountInString(c.title)
	}
	for r := range sorted {
		cells[r] = make([]string, len(topColumns))
		for i, c := range topColumns {
			s := sanitize(c.cell(&sorted[r]))
			cells[r][i] = s
			widths[i] = max(widths[i], utf8.RuneCountInString(s))
		}
	}
	if width > 0 {
		fitWidths(widths, width)
	}

	row := func(vals func(i int) string) string {
		var b strings.Builder
		for i, c := range topColumns {
			if i > 0 {
				b.WriteString(strings.Repeat(" ", colGap))
			}
			s := ellipsize(vals(i), widths[i])
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(s))
			if c.right {
				b.WriteString(pad + s)
			} else if i < len(topColumns)-1 {
				b.WriteString(s + pad)
			} else {
				b.WriteString(s) // no trailing blanks
			}
		}
		return b.String()
	}
	out := []string{row(func(i int) string { return topColumns[i].title })}
	for r := range cells {
		out = append(out, row(func(i int) string { return cells[r][i] }))
	}
	if rows > 0 && len(out) > rows {
		hidden := len(out) - rows + 1 // the last line that fits says so
		out = out[:rows-1]
		if rows == 1 {
			hidden = len(cells) // only room for the note: no header row
		}
		out = append(out, fmt.Sprintf("... %d more", hidden))
	}
	return out
}

// fitWidths narrows the shrinkable columns, in their order, until the
// table fits in width or they are at their minimum.
func fitWidths(widths []int, width int) {
	total := colGap * (len(widths) - 1)
	for _, w := range widths {
		total += w
	}
	order := make([]int, 0, len(topColumns))
	for i, c := range topColumns {
		if c.shrink > 0 {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(topColumns[a].shrink, topColumns[b].shrink) })
	for _, i := range order {
		if total <= width {
			return
		}
		cut := min(total-width, widths[i]-topColumns[i].min)
		if cut > 0 {
			widths[i] -= cut
			total -= cut
		}
	}
}

// sortInstances returns the instances ordered by key: cpu and mem highest
// first with unknown figures last, name by name and index; ties by id, so
// rows do not swap places between refreshes.
func sortInstances(instances []api.Instance, key sortKey) []api.Instance {
	out := slices.Clone(instances)
	slices.SortStableFunc(out, func(a, b api.Instance) int {
		var c int
		switch key {
		case sortCPU:
			c = descNil(a.Usage.CPUPct, b.Usage.CPUPct)
		case sortMem:
			c = descNil(a.Usage.MemoryBytes, b.Usage.MemoryBytes)
		case sortName:
			c = cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.Index, b.Index))
		}
		return cmp.Or(c, strings.Compare(a.ID, b.ID))
	})
	return out
}

// descNil compares for a descending order with nil after every value.
func descNil[T cmp.Ordered](a, b *T) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return cmp.Compare(*b, *a)
}

// clipLines cuts every line to width runes (0: no limit).
func clipLines(lines []string, width int) []string {
	if width <= 0 {
		return lines
	}
	for i, l := range lines {
		if utf8.RuneCountInString(l) > width {
			lines[i] = string([]rune(l)[:width])
		}
	}
	return lines
}

// ellipsize cuts s to n runes, marking the cut with a trailing '~'.
func ellipsize(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	if n <= 1 {
		return string(r[:max(n, 0)])
	}
	return string(r[:n-1]) + "~"
}

// sanitize keeps control characters from an agent's strings (a health
// message, say) out of the terminal.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// keysIn returns the plain keys in what one read from the terminal gave,
// without escape sequences: an arrow key sends ESC [ C or ESC O C, and its
// letters must not be taken for commands.
func keysIn(b []byte) []byte {
	var keys []byte
	for i := 0; i < len(b); i++ {
		if b[i] != 0x1b {
			keys = append(keys, b[i])
			continue
		}
		if i+1 >= len(b) {
			break // a lone ESC
		}
		switch b[i+1] {
		case '[': // CSI: parameters and intermediates, then a final byte
			i += 2
			for i < len(b) && (b[i] < 0x40 || b[i] > 0x7e) {
				i++
			}
		case 'O': // SS3: one more byte
			i += 2
		default: // Alt+key: drop the key too
			i++
		}
	}
	return keys
}

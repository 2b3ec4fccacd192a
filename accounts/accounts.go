package accounts

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The pool's accounts
//
// The kernel runs a uid and a gid without any passwd or group entry; the
// entries are for people and tools (ls, ps, find -user). Ensure adds the
// group and, when asked, one passwd and shadow entry per pool uid.
// useradd would take a second or more per user — hours for a pool of
// 10,000 — so the files are edited directly, the way shadow-utils does:
// under lckpwdf's lock (a write lock on <etc>/.pwd.lock, which every
// shadow-utils tool takes first), each file replaced whole (temporary file
// with the original's owner and mode, fsync, rename). Entries are appended;
// every existing line is kept byte for byte.
//
// A journal names what was added, so Undo removes exactly that. It is
// written before the files; a failure part way puts back the files already
// replaced, and a crash leaves a journal covering at least what was added,
// for a rerun or an undo.

var (
	// ErrClash reports a passwd or group entry, not ward's, that holds a
	// name or id the pool needs.
	ErrClash = errors.New("account clash")
	// ErrLocked reports that another program held the passwd lock too long.
	ErrLocked = errors.New("passwd files locked")
	// ErrJournalConfig reports an accounts journal written for another
	// group, gid or etc directory.
	ErrJournalConfig = errors.New("accounts journal is for another configuration")
)

// DefaultLockTimeout is how long Ensure waits for the passwd lock: what
// lckpwdf waits.
const DefaultLockTimeout = 15 * time.Second

// Entries is the pool's group entry and, with Users, its passwd and shadow
// entries: what Ensure writes.
type Entries struct {
	// EtcDir holds passwd, group, shadow and gshadow: "/etc" on a host. The
	// shadow files are edited only when present.
	EtcDir         string
	Group          string
	GID            uint32
	UIDMin, UIDMax int
	// Users: a passwd entry <group>-<uid> (gid GID, home /nonexistent,
	// shell /usr/sbin/nologin) and a locked shadow entry per pool uid.
	Users bool
	// LockTimeout bounds the wait for the passwd lock; 0 is
	// DefaultLockTimeout.
	LockTimeout time.Duration
}

// Report says what Ensure or Undo did.
type Report struct {
	GroupCreated  bool // the group entry was added
	GroupExisted  bool // the group entry was there already
	GroupRemoved  bool
	UsersCreated  int // passwd entries added
	UsersExisting int // pool passwd entries that were there already
	UsersRemoved  int // passwd entries removed (undo, or users no longer wanted)
}

// MaxPoolUsers bounds the passwd entries Ensure writes.
const MaxPoolUsers = 100000

// noID is (gid_t)-1: chown's "leave unchanged" and the id of ACL entries
// that name nobody, so never a group's gid.
const noID = 1<<32 - 1

const (
	poolHome  = "/nonexistent"
	poolShell = "/usr/sbin/nologin"
)

type accountsJournal struct {
	EtcDir  string `json:"etc_dir"`
	Group   string `json:"group"`
	GID     uint32 `json:"gid"`
	GroupIn bool   `json:"group_added,omitempty"`   // the group line, added by us
	GShadow bool   `json:"gshadow_added,omitempty"` // the gshadow line, added by us
	Passwd  uidSet `json:"passwd_added,omitempty"`  // uids whose passwd line we added
	Shadow  uidSet `json:"shadow_added,omitempty"`  // uids whose shadow line we added
}

// uidSet is a sorted list of uids, kept in the journal as [first, last]
// runs: a pool of 10,000 is one pair.
type uidSet []int

func (s uidSet) MarshalJSON() ([]byte, error) {
	runs := [][2]int{}
	for _, uid := range s {
		if n := len(runs); n > 0 && runs[n-1][1]+1 == uid {
			runs[n-1][1] = uid
			continue
		}
		runs = append(runs, [2]int{uid, uid})
	}
	return json.Marshal(runs)
}

func (s *uidSet) UnmarshalJSON(b []byte) error {
	var runs [][2]int
	if err := json.Unmarshal(b, &runs); err != nil {
		return err
	}
	var out uidSet
	for _, r := range runs {
		if r[0] > r[1] || r[1]-r[0] >= MaxPoolUsers || (len(out) > 0 && r[0] <= out[len(out)-1]) {
			return fmt.Errorf("uid run %v out of order", r)
		}
		for uid := r[0]; uid <= r[1]; uid++ {
			out = append(out, uid)
		}
	}
	*s = out
	return nil
}

// empty: nothing recorded, so no journal is needed.
func (j accountsJournal) empty() bool {
	return !j.GroupIn && !j.GShadow && len(j.Passwd) == 0 && len(j.Shadow) == 0
}

func (a *Entries) validate() error {
	switch {
	case a.EtcDir == "":
		return errors.New("accounts: accounts: no etc directory")
	case a.Group == "" || strings.ContainsAny(a.Group, ":\n,") || strings.TrimSpace(a.Group) != a.Group:
		return fmt.Errorf("accounts: users.group %q is not a group name", a.Group)
	case a.GID == 0 || a.GID == noID:
		return fmt.Errorf("accounts: users.gid %d is not a gid for the pool", a.GID)
	case a.Users && (a.UIDMin < 1 || a.UIDMax < a.UIDMin):
		return fmt.Errorf("accounts: users.uid_min..uid_max %d..%d is not a range of uids", a.UIDMin, a.UIDMax)
	case a.Users && a.UIDMax-a.UIDMin >= MaxPoolUsers:
		// Each entry is a line in files every login and ls reads.
		return fmt.Errorf("accounts: users.uid_min..uid_max %d..%d: users.create_passwd writes at most %d entries", a.UIDMin, a.UIDMax, MaxPoolUsers)
	}
	return nil
}

// etcFile is one of the account files, as lines.
type etcFile struct {
	name  string
	lines []string // without their "\n"
	// trailing: the content ended in "\n" (the usual case), so lines has
	// no empty last element for it.
	trailing bool
	exists   bool
	changed  bool
	orig     []byte
}

func parseEtc(name string, b []byte, exists bool) *etcFile {
	f := &etcFile{name: name, exists: exists, orig: b}
	if len(b) == 0 {
		f.trailing = true
		return f
	}
	s := string(b)
	f.trailing = strings.HasSuffix(s, "\n")
	f.lines = strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return f
}

func (f *etcFile) bytes() []byte {
	var sb strings.Builder
	for i, l := range f.lines {
		sb.WriteString(l)
		if i < len(f.lines)-1 || f.trailing {
			sb.WriteByte('\n')
		}
	}
	return []byte(sb.String())
}

func (f *etcFile) add(line string) {
	// A file without its final newline gets one before the new line.
	f.trailing = true
	f.lines = append(f.lines, line)
	f.changed = true
}

// remove drops the lines drop reports, returning how many.
func (f *etcFile) remove(drop func(fields []string) bool) int {
	n := 0
	kept := f.lines[:0:0]
	for _, l := range f.lines {
		if fl := fields(l); fl != nil && drop(fl) {
			n++
			continue
		}
		kept = append(kept, l)
	}
	if n > 0 {
		f.lines, f.changed = kept, true
	}
	return n
}

// fields splits an entry; comments, blank and NIS (+/-) lines are nil.
func fields(line string) []string {
	if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
		return nil
	}
	return strings.Split(line, ":")
}

func atoiField(f []string, i int) (int, bool) {
	if i >= len(f) {
		return 0, false
	}
	n, err := strconv.Atoi(f[i])
	return n, err == nil
}

// plan is the whole change to the four files, computed before any is
// written.
type accountsPlan struct {
	group, gshadow, passwd, shadow *etcFile
	next                           accountsJournal // after the change
	during                         accountsJournal // while it is under way
	rep                            Report
}

// planEnsure computes the edit that makes the files hold the group and the
// wanted users, and drop the users old added that are no longer wanted.
func planEnsure(a *Entries, old accountsJournal, group, gshadow, passwd, shadow *etcFile) (*accountsPlan, error) {
	p := &accountsPlan{group: group, gshadow: gshadow, passwd: passwd, shadow: shadow}
	p.next = accountsJournal{EtcDir: a.EtcDir, Group: a.Group, GID: a.GID, GroupIn: old.GroupIn, GShadow: old.GShadow}
	var clashes []string
	gidStr := strconv.FormatUint(uint64(a.GID), 10)

	// The group.
	for i, l := range group.lines {
		f := fields(l)
		if len(f) < 3 {
			continue
		}
		switch {
		case f[0] == a.Group && f[2] == gidStr:
			p.rep.GroupExisted = true
		case f[0] == a.Group:
			clashes = append(clashes, fmt.Sprintf("group %q has gid %s, users.gid is %d (%s line %d)", a.Group, f[2], a.GID, group.name, i+1))
		case f[2] == gidStr:
			clashes = append(clashes, fmt.Sprintf("gid %d belongs to group %q (%s line %d)", a.GID, f[0], group.name, i+1))
		}
	}

	// The users: which are wanted, which are there, which clash.
	want := map[int]bool{}
	if a.Users {
		for uid := a.UIDMin; uid <= a.UIDMax; uid++ {
			want[uid] = true
		}
	}
	inPasswd := map[int]bool{}
	for i, l := range passwd.lines {
		f := fields(l)
		if len(f) < 4 {
			continue
		}
		uid, ok := atoiField(f, 2)
		if ok && f[0] == PoolUserName(a.Group, uid) && f[3] == gidStr {
			inPasswd[uid] = true
			continue
		}
		if !a.Users {
			continue
		}
		if ok && want[uid] {
			clashes = append(clashes, fmt.Sprintf("uid %d belongs to user %q (%s line %d)", uid, f[0], passwd.name, i+1))
			continue
		}
		if n, isPool := poolUID(a.Group, f[0]); isPool && want[n] {
			clashes = append(clashes, fmt.Sprintf("user name %q is taken by uid %s gid %s (%s line %d)", f[0], f[2], f[3], passwd.name, i+1))
		}
	}
	inShadow := map[string]bool{}
	if shadow.exists {
		for _, l := range shadow.lines {
			if f := fields(l); len(f) > 1 {
				inShadow[f[0]] = true
			}
		}
	}
	gshadowHas := false
	if gshadow.exists {
		for _, l := range gshadow.lines {
			if f := fields(l); len(f) > 1 && f[0] == a.Group {
				gshadowHas = true
			}
		}
	}
	if len(clashes) > 0 {
		return nil, fmt.Errorf("accounts: %w: %s", ErrClash, strings.Join(first(clashes, 10), "; "))
	}

	// Adds.
	if !p.rep.GroupExisted {
		group.add(a.Group + ":x:" + gidStr + ":")
		p.rep.GroupCreated, p.next.GroupIn = true, true
	}
	if gshadow.exists && !gshadowHas {
		gshadow.add(a.Group + ":!::")
		p.next.GShadow = true
	}
	var addedPasswd, addedShadow []int
	for uid := a.UIDMin; a.Users && uid <= a.UIDMax; uid++ {
		name := PoolUserName(a.Group, uid)
		if inPasswd[uid] {
			p.rep.UsersExisting++
		} else {
			passwd.add(name + ":x:" + strconv.Itoa(uid) + ":" + gidStr + "::" + poolHome + ":" + poolShell)
			addedPasswd = append(addedPasswd, uid)
		}
		if shadow.exists && !inShadow[name] {
			// "!": locked, no password can match.
			shadow.add(name + ":!:::::::")
			addedShadow = append(addedShadow, uid)
		}
	}
	p.rep.UsersCreated = len(addedPasswd)

	// Removals: users this journal added and the configuration no longer
	// wants (users.create_passwd turned off, the range shrunk).
	var keptPasswd, keptShadow, dropPasswd, dropShadow []int
	for _, uid := range old.Passwd {
		if want[uid] {
			keptPasswd = append(keptPasswd, uid)
		} else {
			dropPasswd = append(dropPasswd, uid)
		}
	}
	for _, uid := range old.Shadow {
		if want[uid] {
			keptShadow = append(keptShadow, uid)
		} else {
			dropShadow = append(dropShadow, uid)
		}
	}
	p.rep.UsersRemoved = removeUsers(a.Group, a.GID, passwd, shadow, dropPasswd, dropShadow)

	p.next.Passwd = sortedUnion(keptPasswd, addedPasswd)
	p.next.Shadow = sortedUnion(keptShadow, addedShadow)
	p.during = p.next
	p.during.Passwd = sortedUnion(p.next.Passwd, dropPasswd)
	p.during.Shadow = sortedUnion(p.next.Shadow, dropShadow)
	return p, nil
}

// planUndo computes the edit that removes what j records as added.
func planUndo(j accountsJournal, group, gshadow, passwd, shadow *etcFile) *accountsPlan {
	p := &accountsPlan{group: group, gshadow: gshadow, passwd: passwd, shadow: shadow, during: j}
	gidStr := strconv.FormatUint(uint64(j.GID), 10)
	if j.GroupIn {
		p.rep.GroupRemoved = group.remove(func(f []string) bool {
			return len(f) >= 3 && f[0] == j.Group && f[2] == gidStr
		}) > 0
	}
	if j.GShadow && gshadow.exists {
		gshadow.remove(func(f []string) bool { return f[0] == j.Group })
	}
	p.rep.UsersRemoved = removeUsers(j.Group, j.GID, passwd, shadow, j.Passwd, j.Shadow)
	return p
}

// removeUsers drops the pool's passwd lines for uids and shadow lines for
// shadowUIDs, matching each exactly (name, and uid and gid in passwd) so
// that nobody else's entry goes. It returns the passwd lines dropped.
func removeUsers(group string, gid uint32, passwd, shadow *etcFile, uids, shadowUIDs []int) int {
	gidStr := strconv.FormatUint(uint64(gid), 10)
	drop := map[string]string{} // name -> uid
	for _, uid := range uids {
		drop[PoolUserName(group, uid)] = strconv.Itoa(uid)
	}
	n := 0
	if len(drop) > 0 {
		n = passwd.remove(func(f []string) bool {
			uid, ok := drop[f[0]]
			return ok && len(f) >= 4 && f[2] == uid && f[3] == gidStr
		})
	}
	if shadow.exists && len(shadowUIDs) > 0 {
		names := map[string]bool{}
		for _, uid := range shadowUIDs {
			names[PoolUserName(group, uid)] = true
		}
		shadow.remove(func(f []string) bool { return names[f[0]] })
	}
	return n
}

// poolUID parses a name of the form PoolUserName(group, uid).
func poolUID(group, name string) (int, bool) {
	s, ok := strings.CutPrefix(name, group+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && PoolUserName(group, n) == name
}

func sortedUnion(a, b []int) uidSet {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func first(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], fmt.Sprintf("... (%d more)", len(l)-n))
	}
	return l
}

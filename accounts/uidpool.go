package accounts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/hostward/ward/lease"
)

// ErrPoolOverlap reports a passwd user whose uid falls inside the pool: an
// instance leased that uid would share files and signals with that user.
var ErrPoolOverlap = errors.New("uid pool overlaps an existing user")

// UIDPool leases uids to instances. Its leases live in the instance records
// (see package lease); the pool itself adds the passwd safety check.
type UIDPool struct {
	*lease.Pool
	GID   uint32
	Group string
}

// NewUIDPool returns a pool over [min, max] whose members run with gid.
func NewUIDPool(min, max int, group string, gid uint32) *UIDPool {
	return &UIDPool{Pool: lease.New(min, max), GID: gid, Group: group}
}

// IsLeased reports whether uid is leased to an instance: the question a
// quota backend asks before clearing the quota of a uid (see
// quota.Backend.RemoveLeftover).
func (p *UIDPool) IsLeased(uid uint32) bool {
	return uid <= math.MaxInt32 && p.Held(int(uid))
}

// CheckPasswd fails with ErrPoolOverlap when a user in the passwd file at
// path has a uid inside the pool. Entries that ward setup writes for the
// pool itself — named "<group>-<uid>" with the pool's gid — are not an
// overlap.
func (p *UIDPool) CheckPasswd(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	defer f.Close()
	return p.checkPasswd(f, path)
}

func (p *UIDPool) checkPasswd(r io.Reader, path string) error {
	min, max := p.Range()
	var clashes []string
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 4 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err := strconv.Atoi(f[2])
		if err != nil || uid < min || uid > max {
			continue
		}
		if f[0] == PoolUserName(p.Group, uid) && f[3] == strconv.Itoa(int(p.GID)) {
			continue
		}
		clashes = append(clashes, fmt.Sprintf("%s (uid %d, %s line %d)", f[0], uid, path, line))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("accounts: read %s: %w", path, err)
	}
	if len(clashes) > 0 {
		return fmt.Errorf("%w: users.uid_min..uid_max = %d..%d contains %s; move the range or the users",
			ErrPoolOverlap, min, max, strings.Join(clashes, ", "))
	}
	return nil
}

// PoolUserName is the passwd name ward setup gives a pool uid.
func PoolUserName(group string, uid int) string {
	return group + "-" + strconv.Itoa(uid)
}

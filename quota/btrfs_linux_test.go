package quota

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/btrfstest"
)

const mib = 1 << 20

// btrfsFS is a fresh btrfs filesystem for one test, with an instances
// directory that tenants can traverse but not list.
type btrfsFS struct {
	mnt       string
	instances string
	b         Backend
}

// The filesystem commits every second rather than every 30: the kernel's
// cleaner, which finishes removed subvolumes and their qgroups, runs after
// the periodic commit (a sync does not wake it).
func newBtrfsFS(t testing.TB, simpleQuota bool) *btrfsFS {
	t.Helper()
	mnt := btrfstest.Mount(t, "commit=1")
	if simpleQuota {
		if err := EnableBtrfsQuota(mnt); err != nil {
			t.Fatal(err)
		}
	}
	inst := filepath.Join(mnt, "instances")
	if err := os.Mkdir(inst, 0o711); err != nil {
		t.Fatal(err)
	}
	b, err := New(config.QuotaBtrfs, mnt)
	if err != nil {
		t.Fatal(err)
	}
	return &btrfsFS{mnt: mnt, instances: inst, b: b}
}

func (f *btrfsFS) target(name string) Target {
	return Target{Dir: filepath.Join(f.instances, name), UID: 4_100_000 + rand.Uint32N(1000)}
}

// sync commits the running transaction: qgroup counters (Usage) are
// updated at commit.
func (f *btrfsFS) sync(t testing.TB) {
	t.Helper()
	fd, err := unix.Open(f.mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatal(err)
	}
}

func (f *btrfsFS) qgroupsDir(t testing.TB) string {
	t.Helper()
	fd, err := openDir(f.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sys, err := btrfsSysfsDir(fd)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(sys, "qgroups")
}

// qgroups lists the qgroups of the filesystem (sysfs directory names such
// as "0_256"), without the top level's 0_5.
func (f *btrfsFS) qgroups(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(f.qgroupsDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && e.Name() != "0_5" {
			out = append(out, e.Name())
		}
	}
	return out
}

// subvolumes lists every subvolume on the filesystem.
func (f *btrfsFS) subvolumes(t testing.TB) []uint64 {
	t.Helper()
	fd, err := openDir(f.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ids, err := subvolTree(fd, 5)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// waitNoQgroups waits for the kernel to drop the level-0 qgroups of
// destroyed subvolumes, which it does once its cleaner has run.
func (f *btrfsFS) waitNoQgroups(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		left := f.qgroups(t)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("qgroups left behind: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func subvolOf(t testing.TB, dir string) uint64 {
	t.Helper()
	fd, id, err := openSubvolAt(unix.AT_FDCWD, dir)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	return id
}

// fill writes a new file in 64 KiB chunks until EDQUOT and returns how
// much was written; any other outcome fails the test.
func fill(t testing.TB, path string, max int64) int64 {
	t.Helper()
	n, err := writeUntil(path, max)
	if !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("writing %s: %d bytes, err = %v; want EDQUOT before %d bytes", path, n, err, max)
	}
	return n
}

func within(got, want int64, pct float64) bool {
	d := float64(got - want)
	return d >= -pct/100*float64(want) && d <= pct/100*float64(want)
}

func TestBtrfsCreateEnforcesLimit(t *testing.T) {
	f := newBtrfsFS(t, true)
	a, sib := f.target("a"), f.target("b")
	if err := f.b.Create(a, 10*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Create(sib, 10*mib); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(a.Dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o700 || st.Uid != 0 || st.Ino != btrfsFirstFreeObjectid {
		t.Errorf("created dir: mode %o uid %d ino %d; want a root-owned 0700 subvolume root", st.Mode&0o7777, st.Uid, st.Ino)
	}

	// Written in plain 64 KiB writes: the kernel checks the limit when a
	// write reserves its space, so EDQUOT comes at the write that would
	// cross it; no fsync or O_DIRECT is needed for that.
	n := fill(t, filepath.Join(a.Dir, "fill"), 40*mib)
	if n > 10*mib || !within(n, 10*mib, 5) {
		t.Errorf("EDQUOT after %d bytes, want within 5%% below %d", n, 10*mib)
	}
	if m, err := writeUntil(filepath.Join(sib.Dir, "data"), 5*mib); err != nil || m != 5*mib {
		t.Errorf("sibling wrote %d bytes, err = %v; its own limit is untouched", m, err)
	}

	f.sync(t)
	u, err := f.b.Usage(a)
	if err != nil {
		t.Fatal(err)
	}
	if !within(u, n, 5) {
		t.Errorf("Usage = %d after %d bytes written", u, n)
	}
	u, err = f.b.Usage(sib)
	if err != nil || !within(u, 5*mib, 5) {
		t.Errorf("sibling Usage = %d, %v after 5 MiB written", u, err)
	}
}

func TestBtrfsSetLimit(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := f.b.Create(a, 10*mib); err != nil {
		t.Fatal(err)
	}
	n1 := fill(t, filepath.Join(a.Dir, "one"), 40*mib)

	if err := f.b.SetLimit(a, 20*mib); err != nil {
		t.Fatal(err)
	}
	n2 := fill(t, filepath.Join(a.Dir, "two"), 40*mib)
	if total := n1 + n2; total > 20*mib || !within(total, 20*mib, 5) {
		t.Errorf("after raising to 20 MiB: %d bytes in all before EDQUOT", total)
	}

	if err := f.b.SetLimit(a, 5*mib); err != nil {
		t.Fatal(err)
	}
	if n, err := writeUntil(filepath.Join(a.Dir, "three"), 64<<10); !errors.Is(err, unix.EDQUOT) {
		t.Errorf("after lowering below usage: wrote %d bytes, err = %v; want EDQUOT", n, err)
	}

	if err := f.b.SetLimit(a, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := writeUntil(filepath.Join(a.Dir, "four"), 30*mib); err != nil {
		t.Errorf("without a limit: wrote %d bytes, err = %v", n, err)
	}

	plain := filepath.Join(f.instances, "plain")
	if err := os.Mkdir(plain, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.b.SetLimit(Target{Dir: plain}, mib); err == nil || !strings.Contains(err.Error(), "not a btrfs subvolume") {
		t.Errorf("SetLimit on a plain directory: err = %v", err)
	}
}

func TestBtrfsCreateNoLimit(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := f.b.Create(a, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := writeUntil(filepath.Join(a.Dir, "f"), 20*mib); err != nil {
		t.Fatalf("wrote %d, err = %v", n, err)
	}
	f.sync(t)
	if u, err := f.b.Usage(a); err != nil || !within(u, 20*mib, 5) {
		t.Errorf("Usage = %d, %v, want about 20 MiB", u, err)
	}
}

func TestBtrfsCreateExisting(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := os.Mkdir(a.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.Dir, "keep"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	groups, subvols := f.qgroups(t), f.subvolumes(t)

	if err := f.b.Create(a, 10*mib); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create over an existing dir: err = %v, want os.ErrExist", err)
	}
	if b, err := os.ReadFile(filepath.Join(a.Dir, "keep")); err != nil || string(b) != "data" {
		t.Errorf("existing contents after a failed Create: %q, %v", b, err)
	}
	if fi, err := os.Stat(a.Dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("existing dir after a failed Create: %v, %v", fi, err)
	}
	if g := f.qgroups(t); !slices.Equal(g, groups) {
		t.Errorf("qgroups %v -> %v", groups, g)
	}
	if s := f.subvolumes(t); !slices.Equal(s, subvols) {
		t.Errorf("subvolumes %v -> %v", subvols, s)
	}

	// A subvolume made by Create is just as existing.
	c := f.target("c")
	if err := f.b.Create(c, mib); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Create(c, mib); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create twice: err = %v, want os.ErrExist", err)
	}
}

// Without quotas the kernel refuses the qgroup: Create must take the
// subvolume it already made away again.
func TestBtrfsCreateRollsBack(t *testing.T) {
	f := newBtrfsFS(t, false)
	a := f.target("a")
	err := f.b.Create(a, 10*mib)
	if err == nil {
		t.Fatal("Create without quotas succeeded")
	}
	t.Log(err)
	if _, serr := os.Lstat(a.Dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("after the failed Create: %v", serr)
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes left: %v", s)
	}
}

func TestBtrfsRemove(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := f.b.Create(a, 10*mib); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(a.Dir, "x", "y"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := writeUntil(filepath.Join(a.Dir, "x", "y", "f"), 3*mib); err != nil {
		t.Fatal(err)
	}
	// Subvolumes nested two deep, made by root here (the tenant's own are
	// in TestBtrfsTenantNestedSubvolume).
	for _, d := range []string{a.Dir, filepath.Join(a.Dir, "n1")} {
		fd, err := openDir(d)
		if err != nil {
			t.Fatal(err)
		}
		err = subvolCreate(fd, "n1")
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := f.subvolumes(t); len(s) != 3 {
		t.Fatalf("subvolumes before Remove: %v", s)
	}
	id := subvolOf(t, a.Dir)

	if err := f.b.Remove(a); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(a.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir after Remove: %v", err)
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes after Remove: %v", s)
	}
	if _, err := os.Stat(filepath.Join(f.qgroupsDir(t), qgroupSysfsName(qgroupID(1, id)))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("qgroup 1/%d after Remove: %v", id, err)
	}
	if err := f.b.Remove(a); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := f.b.Remove(f.target("never-made")); err != nil {
		t.Errorf("Remove of a dir never made: %v", err)
	}
	f.waitNoQgroups(t)

	// Whatever else sits at the target is removed too.
	p := f.target("plain")
	if err := os.MkdirAll(filepath.Join(p.Dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plain dir after Remove: %v", err)
	}
}

// A Remove interrupted after it dropped the qgroup (a crash) is finished
// by the next one.
func TestBtrfsRemoveAfterPartialRemove(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := f.b.Create(a, 10*mib); err != nil {
		t.Fatal(err)
	}
	pfd, err := openDir(f.instances)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	if err := dropGroup(pfd, subvolOf(t, a.Dir), nil); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Remove(a); err != nil {
		t.Fatal(err)
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes after Remove: %v", s)
	}
	f.waitNoQgroups(t)
}

const tenantEnv = "QUOTA_TEST_TENANT"

// asTenant runs fn on a locked OS thread whose uids and gids (real,
// effective, saved) are uid: the kernel checks that thread as the tenant,
// without capabilities. The thread is never unlocked, so it exits with
// the goroutine instead of going back to the runtime's pool.
func asTenant(uid uint32, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- fmt.Errorf("setresgid: %w", e)
			return
		}
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- fmt.Errorf("setresuid: %w", e)
			return
		}
		done <- fn()
	}()
	return <-done
}

// A tenant can create subvolumes in its own directory without privilege.
// With simple quotas they are charged to its limit, and Remove destroys
// them.
func TestBtrfsTenantNestedSubvolume(t *testing.T) {
	f := newBtrfsFS(t, true)
	a := f.target("a")
	if err := f.b.Create(a, 10*mib); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(a.Dir, int(a.UID), int(a.UID)); err != nil {
		t.Fatal(err)
	}
	var n int64
	err := asTenant(a.UID, func() error {
		if os.Geteuid() == 0 {
			// Geteuid asks the kernel on this thread.
			return errors.New("still root")
		}
		for _, d := range []string{a.Dir, filepath.Join(a.Dir, "nested")} {
			fd, err := openDir(d)
			if err != nil {
				return err
			}
			err = subvolCreate(fd, "nested")
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("subvolume in %s as uid %d: %w", d, a.UID, err)
			}
		}
		var err error
		n, err = writeUntil(filepath.Join(a.Dir, "nested", "nested", "fill"), 40*mib)
		if !errors.Is(err, unix.EDQUOT) {
			return fmt.Errorf("tenant wrote %d bytes in a nested subvolume, err = %v; want EDQUOT", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n > 10*mib || !within(n, 10*mib, 5) {
		t.Errorf("tenant hit EDQUOT after %d bytes, want within 5%% below %d", n, 10*mib)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(a.Dir, "nested"), &st); err != nil || st.Uid != a.UID || st.Ino != btrfsFirstFreeObjectid {
		t.Fatalf("nested subvolume: uid %d ino %d, %v", st.Uid, st.Ino, err)
	}
	f.sync(t)
	if u, err := f.b.Usage(a); err != nil || !within(u, n, 5) {
		t.Errorf("Usage = %d, %v; the tenant wrote %d in its nested subvolume", u, err, n)
	}

	if err := f.b.Remove(a); err != nil {
		t.Fatal(err)
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes after Remove: %v", s)
	}
	f.waitNoQgroups(t)
}

func TestBtrfsConcurrentTargets(t *testing.T) {
	f := newBtrfsFS(t, true)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			tg := f.target(fmt.Sprintf("i%d", i))
			for range 5 {
				if err := f.b.Create(tg, int64(i+1)*mib); err != nil {
					errs <- err
					return
				}
				if _, err := f.b.Usage(tg); err != nil {
					errs <- err
				}
				if err := f.b.Remove(tg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes left: %v", s)
	}
	f.waitNoQgroups(t)
}

func TestBtrfsVerify(t *testing.T) {
	f := newBtrfsFS(t, true)
	// A probe left by a crashed prober is cleaned up by the next Verify.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := Target{Dir: filepath.Join(f.mnt, fmt.Sprintf("%s%d-dead", probePrefix, dead.Process.Pid))}
	if err := f.b.Create(stale, mib); err != nil {
		t.Fatal(err)
	}
	if err := f.b.Verify(); err != nil {
		t.Fatalf("Verify with simple quotas: %v", err)
	}
	ents, _ := os.ReadDir(f.mnt)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), probePrefix) {
			t.Errorf("probe left behind: %s", e.Name())
		}
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes after Verify: %v", s)
	}
	f.waitNoQgroups(t)
}

// TestBtrfsVerifyConcurrent: two probes at once (ward doctor beside an
// agent starting) leave each other alone and both pass.
func TestBtrfsVerifyConcurrent(t *testing.T) {
	f := newBtrfsFS(t, true)
	b2, err := New(config.QuotaBtrfs, f.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 10; round++ {
		errs := make(chan error, 2)
		for _, b := range []Backend{f.b, b2} {
			go func() { errs <- b.Verify() }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}

func TestBtrfsVerifyNotEnforced(t *testing.T) {
	t.Run("quota off", func(t *testing.T) {
		f := newBtrfsFS(t, false)
		err := f.b.Verify()
		if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "ward setup") {
			t.Errorf("Verify: %v; want ErrNotEnforced with the fix", err)
		}
	})
	t.Run("full qgroups", func(t *testing.T) {
		f := newBtrfsFS(t, false)
		enableFullQgroups(t, f.mnt)
		err := f.b.Verify()
		if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "escape") {
			t.Errorf("Verify: %v; want ErrNotEnforced naming the escape", err)
		}
		// And the escape is real: a nested subvolume is not charged.
		a := f.target("a")
		if err := f.b.Create(a, 2*mib); err != nil {
			t.Fatal(err)
		}
		fd, err := openDir(a.Dir)
		if err != nil {
			t.Fatal(err)
		}
		err = subvolCreate(fd, "nested")
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := writeUntil(filepath.Join(a.Dir, "nested", "f"), 8*mib); err != nil {
			t.Errorf("full mode, nested: wrote %d, err = %v; expected the kernel to let it through", n, err)
		}
		if err := f.b.Remove(a); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not btrfs", func(t *testing.T) {
		dir := ext4Dir(t)
		b, err := New(config.QuotaBtrfs, dir)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Verify()
		if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "not on btrfs") {
			t.Errorf("Verify on ext4: %v", err)
		}
	})
	t.Run("missing path", func(t *testing.T) {
		b, err := New(config.QuotaBtrfs, "/nonexistent/ward-quota")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Verify(); !errors.Is(err, ErrNotEnforced) {
			t.Errorf("Verify on a missing path: %v", err)
		}
	})
}

func enableFullQgroups(t testing.TB, mnt string) {
	t.Helper()
	fd, err := openDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	a := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnable}
	if err := ioctl(fd, ioctlBtrfsQuotaCtl, unsafe.Pointer(&a)); err != nil {
		t.Fatal(err)
	}
}

func TestEnableBtrfsQuota(t *testing.T) {
	f := newBtrfsFS(t, false)
	if err := EnableBtrfsQuota(f.mnt); err != nil {
		t.Fatal(err)
	}
	mode, err := os.ReadFile(filepath.Join(f.qgroupsDir(t), "mode"))
	if err != nil || strings.TrimSpace(string(mode)) != "squota" {
		t.Errorf("mode = %q, %v", mode, err)
	}
	if err := EnableBtrfsQuota(f.mnt); err != nil {
		t.Errorf("second enable: %v", err)
	}

	g := newBtrfsFS(t, false)
	enableFullQgroups(t, g.mnt)
	if err := EnableBtrfsQuota(g.mnt); err == nil || !strings.Contains(err.Error(), "btrfs quota disable") {
		t.Errorf("enable over full qgroups: %v", err)
	}

	if err := EnableBtrfsQuota(ext4Dir(t)); err == nil || !strings.Contains(err.Error(), "not a btrfs") {
		t.Errorf("enable on ext4: %v", err)
	}
}

// A leftover subvolume goes with its qgroup whoever owns it, leased uid or
// not: the quota is the subvolume's, no uid's.
func TestBtrfsRemoveLeftover(t *testing.T) {
	f := newBtrfsFS(t, true)
	for _, leased := range []bool{true, false} {
		a := f.target(fmt.Sprintf("leased-%v", leased))
		if err := f.b.Create(a, 10*mib); err != nil {
			t.Fatal(err)
		}
		if _, err := writeUntil(filepath.Join(a.Dir, "f"), mib); err != nil {
			t.Fatal(err)
		}
		// Handed over, as instdir.Prepare does.
		if err := os.Chown(a.Dir, int(a.UID), int(a.UID)); err != nil {
			t.Fatal(err)
		}
		id := subvolOf(t, a.Dir)
		asked := false
		if err := f.b.RemoveLeftover(a.Dir, func(uint32) bool { asked = true; return leased }); err != nil {
			t.Fatal(err)
		}
		if asked {
			t.Error("btrfs asked whether a uid is leased: its quota is keyed by subvolume")
		}
		if _, err := os.Lstat(a.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leased %v: dir after RemoveLeftover: %v", leased, err)
		}
		if _, err := os.Stat(filepath.Join(f.qgroupsDir(t), qgroupSysfsName(qgroupID(1, id)))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leased %v: qgroup 1/%d after RemoveLeftover: %v", leased, id, err)
		}
	}
	if s := f.subvolumes(t); len(s) != 0 {
		t.Errorf("subvolumes after RemoveLeftover: %v", s)
	}
	if err := f.b.RemoveLeftover(filepath.Join(f.instances, "never-made"), nil); err != nil {
		t.Errorf("RemoveLeftover of a dir never made: %v", err)
	}
	f.waitNoQgroups(t)
}

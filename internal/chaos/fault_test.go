package chaos

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grbd/grbd/internal/raftlog"
	"github.com/grbd/grbd/journal"
	"github.com/stretchr/testify/require"
)

// crashedJournal builds a real journal with 20 synced and 10 unsynced
// writes and returns a copy of its directory taken while it was open: the
// state a kill -9 leaves behind.
func crashedJournal(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "live")
	j, err := journal.Open(journal.Options{Dir: dir, DeviceSize: 1 << 20, SegmentSize: 1 << 20, MaxSize: 4 << 20})
	require.NoError(t, err)
	defer j.Close()
	data := make([]byte, 4096)
	for i := range 30 {
		data[0] = byte(i)
		_, err := j.Append(journal.Write{Offset: int64(i%8) * 4096, Data: data})
		require.NoError(t, err)
		if i == 19 {
			require.NoError(t, j.Sync(j.LastSeq()))
		}
	}
	crashed := filepath.Join(t.TempDir(), "crashed")
	copyDir(t, dir, crashed)
	return crashed
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	}))
}

func reopen(dir string) (uint64, error) {
	j, err := journal.Open(journal.Options{Dir: dir, SegmentSize: 1 << 20, MaxSize: 4 << 20})
	if err != nil {
		return 0, err
	}
	defer j.Close()
	return j.LastSeq(), nil
}

func TestReadJournal(t *testing.T) {
	dir := crashedJournal(t)
	segs, err := readJournal(dir)
	require.NoError(t, err)
	require.Len(t, segs, 1)
	s := segs[0]
	require.Len(t, s.Records, 30)
	for i, r := range s.Records {
		require.Equal(t, uint64(i+1), r.Seq)
		require.Equal(t, i < 20, r.Synced, "record %d (mark %d, ends %d)", i, s.Mark, r.Off+r.Len)
	}
}

// TestJournalFaults damages copies of a crashed journal and checks the
// outcome with the real journal: the harness's faults must mean what the
// scenarios assume.
func TestJournalFaults(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(dir string, rng *rand.Rand) (JournalDamage, error)
		corrupt bool // Open must refuse
		lost    bool // Open cuts some unsynced records
	}{
		{name: "torn tail is cut", damage: TearJournalTail, lost: true},
		{name: "flip in synced record is refused", corrupt: true, damage: func(dir string, rng *rand.Rand) (JournalDamage, error) {
			return FlipJournalBit(dir, rng, true)
		}},
		{name: "flip in unsynced record is cut", lost: true, damage: func(dir string, rng *rand.Rand) (JournalDamage, error) {
			return FlipJournalBit(dir, rng, false)
		}},
	}
	for _, tc := range cases {
		for seed := range uint64(5) {
			t.Run(fmt.Sprintf("%s/seed=%d", tc.name, seed), func(t *testing.T) {
				dir := crashedJournal(t)
				d, err := tc.damage(dir, rand.New(rand.NewPCG(seed, 1)))
				require.NoError(t, err)
				t.Log(d)
				last, err := reopen(dir)
				if tc.corrupt {
					require.ErrorIs(t, err, journal.ErrCorrupt)
					require.NoError(t, d.Undo())
					last, err = reopen(dir)
					require.NoError(t, err)
					require.Equal(t, uint64(30), last, "undone, nothing is lost")
					return
				}
				require.NoError(t, err)
				require.GreaterOrEqual(t, last, uint64(20), "synced records survive")
				if tc.lost {
					require.Less(t, last, uint64(30))
				}
			})
		}
	}
	t.Run("nothing unsynced", func(t *testing.T) {
		dir := crashedJournal(t)
		_, err := reopen(dir) // replays and syncs: the tail is now synced
		require.NoError(t, err)
		_, err = TearJournalTail(dir, rand.New(rand.NewPCG(1, 1)))
		require.ErrorIs(t, err, ErrNothingToDamage)
	})
}

func TestFlipDataBit(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, dataImage), make([]byte, 3*BlockSize), 0o644))
	what, err := FlipDataBit(dir, BlockSize, BlockSize, rand.New(rand.NewPCG(3, 3)))
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, dataImage))
	require.NoError(t, err)
	var set []int
	for i, x := range b {
		if x != 0 {
			set = append(set, i)
		}
	}
	require.Len(t, set, 1, what)
	require.True(t, set[0] >= BlockSize && set[0] < 2*BlockSize, what)
}

// TestWipeStore: the store goes, the control-plane state (under the names
// package raftlog gives it) stays.
func TestWipeStore(t *testing.T) {
	require.Equal(t, []string{raftlog.FileName, raftlog.JoinFileName}, controlPlaneFiles)
	dir := t.TempDir()
	for _, name := range append([]string{dataImage, "meta", filepath.Join(journalSubdir, "00000001.seg")}, controlPlaneFiles...) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644))
	}
	require.NoError(t, WipeStore(dir))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	require.ElementsMatch(t, controlPlaneFiles, left)
	require.Error(t, WipeStore(filepath.Join(dir, "missing")))
}

func TestRenderTable(t *testing.T) {
	a := Endpoint{Name: "n0", IP: "127.77.9.1", Port: 4000}
	b := Endpoint{Name: "n1", IP: "127.77.9.2", Port: 5000}
	got := renderTable("grbdchaos_1_1", []link{{a, b}}, true)
	require.Equal(t, `add table inet grbdchaos_1_1
delete table inet grbdchaos_1_1
table inet grbdchaos_1_1 {
	chain out {
		type filter hook output priority 0; policy accept;
		ip saddr 127.77.9.1 ip daddr 127.77.9.2 drop
		ip saddr 127.0.0.1 ip daddr 127.77.9.2 tcp dport 5000 drop
		ip saddr 127.77.9.1 tcp sport 4000 ip daddr 127.0.0.1 drop
	}
}
`, got)
	require.NotContains(t, renderTable("t", []link{{a, b}}, false), "127.0.0.1")
}

// echoServer echoes lines on ip until the test ends.
func echoServer(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

// canReach reports whether a line sent from src to addr comes back in time.
func canReach(src, addr string) bool {
	d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "ping\n"
}

// TestFirewall partitions two loopback addresses with real nftables rules.
func TestFirewall(t *testing.T) {
	ev := NewEvents(RealClock, t.Logf)
	fw, err := NewFirewall(context.Background(), ev)
	if IsSkip(err) {
		t.Skip(err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, fw.Close()) })
	c := &Cluster{}
	require.NoError(t, c.leaseSubnet())
	defer c.lock.Close()
	ipA, ipB := fmt.Sprintf("127.77.%d.1", c.subnet), fmt.Sprintf("127.77.%d.2", c.subnet)
	addrA, addrB := echoServer(t, ipA), echoServer(t, ipB)
	port := func(a string) int { _, p, _ := net.SplitHostPort(a); var n int; fmt.Sscan(p, &n); return n }
	a, b := Endpoint{"a", ipA, port(addrA)}, Endpoint{"b", ipB, port(addrB)}
	ctx := context.Background()

	require.True(t, canReach(ipA, addrB))
	require.NoError(t, fw.Block(ctx, a, b))
	require.False(t, canReach(ipA, addrB), "a -> b is blocked")
	require.False(t, canReach("127.0.0.1", addrB), "an unbound dialer to b's port counts as a")
	require.False(t, canReach(ipB, addrA), "b's dial to a cannot complete: a's answers are dropped")
	require.NoError(t, fw.Heal(ctx))
	require.True(t, canReach(ipA, addrB))
	require.NoError(t, fw.Partition(ctx, a, b))
	require.False(t, canReach(ipB, addrA))
	require.True(t, canReach(ipA, echoServer(t, fmt.Sprintf("127.77.%d.3", c.subnet))), "a third address is not affected")
	require.NoError(t, fw.Close())
	require.True(t, canReach(ipB, addrA), "closing deletes the table")
}

// TestProxies forwards through a link proxy and adds latency.
func TestProxies(t *testing.T) {
	c := &Cluster{ev: NewEvents(RealClock, t.Logf)}
	require.NoError(t, c.leaseSubnet())
	defer c.lock.Close()
	for i, name := range []string{"a", "b"} {
		ip := fmt.Sprintf("127.77.%d.%d", c.subnet, i+1)
		c.members = append(c.members, &Member{Name: name, IP: ip, Address: echoServer(t, ip)})
	}
	p, err := newLinkProxies(c)
	require.NoError(t, err)
	defer p.Close()
	require.Contains(t, p.overrides("a"), "b=127.77.")
	addr := p.overrides("a")[len("b="):]
	require.True(t, canReach(c.members[0].IP, addr))
	require.Eventually(t, func() bool { return p.Accepted("a", "b") == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Zero(t, p.Accepted("b", "a"))

	require.NoError(t, p.Latency("a", "b", 100*time.Millisecond, 0))
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("x\n"))
	require.NoError(t, err)
	_, err = bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), 180*time.Millisecond, "100ms each way")
	require.NoError(t, p.Clear("a", "b"))
}

func TestDialSources(t *testing.T) {
	addr := echoServer(t, "127.77.250.9")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.77.250.8")}}
	bound, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	defer bound.Close()
	unbound, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer unbound.Close()
	src, err := dialSources([]string{addr})
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"127.77.250.8": true, "127.0.0.1": true}, src)
	got, ok := parseProcAddr("0100007F:1F90")
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:8080", got)
}

// Which journal records the soak counts as made durable: only what a sync
// mark or hint proves (a flip there must be refused). The seed-302 soak took
// every record of a non-last segment for synced, also where no later
// segment was ever synced.
func TestMarkSynced(t *testing.T) {
	rec := func(off, hint int64) journalRecord { return journalRecord{Off: off, Len: 100, Hint: hint} }
	cases := []struct {
		name string
		segs []journalSegment
		want [][]bool
	}{
		{"the mark covers the first two", []journalSegment{{Mark: 264, Records: []journalRecord{rec(64, 0), rec(164, 0), rec(264, 0)}}},
			[][]bool{{true, true, false}}},
		{"a later record's hint covers the first", []journalSegment{{Records: []journalRecord{rec(64, 0), rec(164, 0), rec(264, 164)}}},
			[][]bool{{true, false, false}}},
		{"a later segment synced", []journalSegment{{Records: []journalRecord{rec(64, 0), rec(164, 0)}}, {Mark: 64}},
			[][]bool{{true, true}, nil}},
		{"a later segment's record has a hint", []journalSegment{{Records: []journalRecord{rec(64, 0)}}, {Records: []journalRecord{rec(64, 0), rec(164, 164)}}},
			[][]bool{{true}, {true, false}}},
		{"nothing synced after a rotation", []journalSegment{{Mark: 164, Records: []journalRecord{rec(64, 0), rec(164, 0)}}, {Records: []journalRecord{rec(64, 0)}}},
			[][]bool{{true, false}, {false}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			markSynced(tc.segs)
			for i, s := range tc.segs {
				var got []bool
				for _, r := range s.Records {
					got = append(got, r.Synced)
				}
				require.Equal(t, tc.want[i], got, "segment %d", i)
			}
		})
	}
}

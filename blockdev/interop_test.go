package blockdev

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Interop with real NBD clients: libnbd's nbdinfo and nbdsh, and fio's nbd
// engine. Each test skips when its tool is not installed.

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install libnbd-bin fio): %v", name, err)
	}
	return p
}

// run runs a command and returns its stdout; failure fails the test with
// both outputs.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir() // fio and friends may leave state files behind
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, err, "%s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String()
}

func TestInteropNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	_, addr := startServer(t, newMemDev(64<<20), testOpts)

	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	out := run(t, nil, nbdinfo, "--json", "nbd://"+addr+"/vol0")
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	x := info.Exports[0]
	for k, want := range map[string]any{
		"export-name":          "vol0",
		"description":          "grbd test volume",
		"export-size":          float64(64 << 20),
		"is_read_only":         false,
		"can_flush":            true,
		"can_fua":              true,
		"can_trim":             true,
		"can_zero":             true,
		"can_multi_conn":       true,
		"can_cache":            false,
		"block_size_minimum":   float64(512),
		"block_size_preferred": float64(4096),
		"block_size_maximum":   float64(1 << 20),
	} {
		require.Equal(t, want, x[k], "nbdinfo field %s in %s", k, out)
	}

	list := run(t, nil, nbdinfo, "--list", "nbd://"+addr)
	require.Contains(t, list, "export=\"vol0\"", list)
}

func TestInteropReadOnlyNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	_, addr := startServer(t, roDev{newMemDev(1 << 20)}, Options{})
	out := run(t, nil, nbdinfo, "--json", "nbd://"+addr)
	require.Contains(t, out, `"is_read_only": true`, out)
	require.Contains(t, out, `"can_trim": false`, out)
}

// nbdshEnv returns the environment under which nbdsh finds its Python
// module: nbdsh runs `python3 -mnbd`, and a python3 early in PATH (pyenv)
// may lack the distribution's nbd module.
func nbdshEnv(t *testing.T, nbdsh string) []string {
	t.Helper()
	for _, env := range [][]string{nil, {"PATH=/usr/bin:" + os.Getenv("PATH")}} {
		cmd := exec.Command(nbdsh, "-c", "pass")
		cmd.Env = append(os.Environ(), env...)
		if cmd.Run() == nil {
			return env
		}
	}
	t.Skip("nbdsh cannot import the nbd Python module")
	return nil
}

func TestInteropNbdsh(t *testing.T) {
	nbdsh := requireTool(t, "nbdsh")
	env := nbdshEnv(t, nbdsh)
	dev := newRandDev(16 << 20)
	dev.record = true
	_, addr := startServer(t, dev, testOpts)

	// Each step checks its own result; any assertion error exits nonzero.
	script := fmt.Sprintf(`
import nbd, errno
h.connect_uri("nbd://%s/vol0")
assert h.get_size() == 16 << 20
assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero() and h.can_multi_conn()
buf = bytes(range(256)) * 256            # 64 KiB
h.pwrite(buf, 1 << 20)
h.pwrite(buf[:4096], 2 << 20, nbd.CMD_FLAG_FUA)
h.flush()
assert h.pread(65536, 1 << 20) == buf
h.trim(8192, 1 << 20)
h.zero(4096, (1 << 20) + 16384, nbd.CMD_FLAG_NO_HOLE)
got = h.pread(65536, 1 << 20)
assert got[:8192] == bytes(8192), "trimmed range must read zeroes"
assert got[8192:16384] == buf[8192:16384]
assert got[16384:20480] == bytes(4096), "zeroed range must read zeroes"
assert got[20480:] == buf[20480:]
# Many requests in flight at once, completed in any order.
bufs = [nbd.Buffer(4096) for i in range(64)]
cookies = [h.aio_pread(b, (3 << 20) + i * 4096) for i, b in enumerate(bufs)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for i, c in enumerate(cookies):
    assert h.aio_command_completed(c)
    assert bytes(bufs[i].to_bytearray()) == h.pread(4096, (3 << 20) + i * 4096)
h.set_strict_mode(0)   # let bad requests reach the server instead of failing in libnbd
try:
    h.pread(4096, 16 << 20)
    raise SystemExit("read past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
try:
    h.pwrite(bytes(512), 100)   # misaligned: block sizes were negotiated
    raise SystemExit("misaligned write succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e
h.shutdown()
`, addr)
	run(t, env, nbdsh, "-c", script)

	want := bytes.Repeat(func() []byte {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}(), 256)
	got := dev.bytesAt(1<<20, 65536)
	require.Equal(t, make([]byte, 8192), got[:8192], "trimmed")
	require.Equal(t, want[8192:16384], got[8192:16384])
	require.Equal(t, make([]byte, 4096), got[16384:20480], "zeroed")
	require.Equal(t, want[20480:], got[20480:])
	require.Equal(t, want[:4096], dev.bytesAt(2<<20, 4096))
	require.Contains(t, dev.eventLog(), "write off=2097152 len=4096 fua=true")
	require.Contains(t, dev.eventLog(), "flush")
}

// fio with 4 jobs x 32 MiB of random 4 KiB writes at QD32 each, then fio's
// own crc32c read-back verification of every block.
func TestInteropFioVerify(t *testing.T) {
	fio := requireTool(t, "fio")
	const jobs, per = 4, 32 << 20
	dev := newMemDev(jobs * per)
	s, addr := startServer(t, dev, Options{})
	out := run(t, nil, fio, "--name=v", "--ioengine=nbd", "--uri=nbd://"+addr,
		"--rw=randwrite", "--bs=4k", "--iodepth=32", fmt.Sprintf("--size=%d", per),
		"--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", fmt.Sprintf("--numjobs=%d", jobs),
		fmt.Sprintf("--offset_increment=%d", per), "--group_reporting")
	require.Contains(t, out, "err= 0", out)
	st := s.Stats()
	require.Equal(t, uint64(jobs*per/4096), st.Writes, "every block written once")
	require.GreaterOrEqual(t, st.Reads, uint64(jobs*per/4096), "every block read back for verification")
	require.Zero(t, st.Errors)
	require.GreaterOrEqual(t, st.Connections, uint64(jobs))
}

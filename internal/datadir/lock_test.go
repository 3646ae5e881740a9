package datadir

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// holderEnv makes the test binary a helper process that holds the lock of
// the named directory until its stdin closes.
const holderEnv = "GRBD_DATADIR_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holderEnv); dir != "" {
		l, err := Acquire(dir)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		_ = l.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSecondLockInProcessIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := Acquire(dir)
	require.NoError(t, err)
	_, err = Acquire(dir)
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid()))
	require.NoError(t, l.Release())
	l2, err := Acquire(dir)
	require.NoError(t, err, "free again after Release")
	require.NoError(t, l2.Release())
}

// Another process's lock is refused with an error naming it; once that
// process dies (kill -9: no cleanup) the directory is free again.
func TestLockHeldByAnotherProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer stdin.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked", strings.TrimSpace(line))

	_, err = Acquire(dir)
	require.ErrorIs(t, err, ErrLocked)
	require.Contains(t, err.Error(), fmt.Sprintf("process %d (", cmd.Process.Pid), "the error names the holder")
	require.Contains(t, err.Error(), dir)
	b, err := os.ReadFile(filepath.Join(dir, LockFile))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\n", cmd.Process.Pid), string(b))

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	l, err := Acquire(dir)
	require.NoError(t, err, "a dead holder's lock file does not block")
	defer l.Release()
	b, err = os.ReadFile(filepath.Join(dir, LockFile))
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("%d\n", os.Getpid()), string(b))
}

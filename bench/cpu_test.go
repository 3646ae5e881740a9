package bench

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// selfSystem is a System whose one server process is this test.
type selfSystem struct{}

func (selfSystem) Name() string                                         { return "self" }
func (selfSystem) Start(context.Context, string, int64) (string, error) { return "", nil }
func (selfSystem) Stop() error                                          { return nil }
func (selfSystem) Processes() []Process                                 { return []Process{{Name: "me", PID: os.Getpid()}} }

// goneSystem lists a process that does not exist.
type goneSystem struct{ selfSystem }

func (goneSystem) Processes() []Process { return []Process{{Name: "gone", PID: 1 << 30}} }

func TestCPUSpent(t *testing.T) {
	before := cpuTimes(selfSystem{})
	require.Contains(t, before, "me")
	x := 0
	for i := range 50_000_000 { // burn a few tens of milliseconds
		x ^= i * i
	}
	require.NotZero(t, x|1)
	spent := cpuSpent(selfSystem{}, before, cpuTimes(selfSystem{}))
	require.Len(t, spent, 1)
	require.Equal(t, "me", spent[0].Process)
	require.GreaterOrEqual(t, spent[0].Seconds, 0.0)
	require.Nil(t, cpuSpent(selfSystem{}, nil, before), "no reading before the job: no CPU")
	require.Nil(t, cpuTimes(goneSystem{}), "a process that cannot be read")
}

func TestAverageAndWriteCPU(t *testing.T) {
	runs := []Result{
		{System: "s", Job: "seqwrite-1m-qd8", IOPS: 1024, BW: 1 << 30, CPU: []JobCPU{{"n0", 2}, {"n1", 1}}},
		{System: "s", Job: "seqwrite-1m-qd8", IOPS: 1024, BW: 1 << 30, CPU: []JobCPU{{"n0", 4}, {"n1", 3}}},
		{System: "s", Job: "randread-4k-qd32", IOPS: 1000, BW: 4e6, CPU: []JobCPU{{"n0", 1}}},
	}
	avg := average(runs)
	require.Equal(t, []JobCPU{{"n0", 3}, {"n1", 2}}, avg[0].CPU)
	var b bytes.Buffer
	require.NoError(t, writeCPU(&b, avg, 2)) // 2 s: 2 GiB, 2048 writes
	out := b.String()
	require.Regexp(t, `seqwrite-1m-qd8\s+s\s+n0\s+3\.00\s+1\.50\s+146\.48`, out)
	require.Regexp(t, `seqwrite-1m-qd8\s+s\s+n1\s+2\.00\s+1\.00\s+97\.66`, out)
	require.NotContains(t, out, "randread", "only write jobs")
	b.Reset()
	require.NoError(t, writeCPU(&b, avg[2:], 2))
	require.Empty(t, b.String(), "no write job, no table")
}

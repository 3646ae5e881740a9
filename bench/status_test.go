package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestInSync(t *testing.T) {
	up := peerStatus{Name: "n1", Connection: connConnected, Disk: diskUpToDate}
	for _, tc := range []struct {
		name  string
		peers []peerStatus
		want  bool
	}{
		{"up to date", []peerStatus{up}, true},
		{"missing peer", nil, false},
		{"behind", []peerStatus{{Name: "n1", Connection: connConnected, Disk: diskUpToDate, Behind: 3}}, false},
		{"resyncing", []peerStatus{{Name: "n1", Connection: connConnected, Disk: "Inconsistent"}}, false},
		{"disconnected", []peerStatus{{Name: "n1", Connection: "Connecting", Disk: diskUpToDate}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, nodeStatus{Peers: tc.peers}.inSync([]string{"n1"}))
		})
	}
	require.True(t, nodeStatus{}.inSync(nil), "a single node is in sync")
}

func TestFetchStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"name":"n0","role":"Primary","disk":"UpToDate","nbd":"nbd://127.0.0.1:1","unknown":1,
			"io":{"bytes_written":4096},"peers":[{"name":"n1","connection":"Connected","disk":"UpToDate","catchup_bytes":7}]}`)
	}))
	defer srv.Close()
	st, err := fetchStatus(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	require.Equal(t, rolePrimary, st.Role)
	require.Equal(t, "nbd://127.0.0.1:1", st.NBD)
	require.Equal(t, uint64(4096), st.IO.BytesWritten)
	p, ok := st.peer("n1")
	require.True(t, ok)
	require.Equal(t, uint64(7), p.CatchupBytes)

	_, err = fetchStatus(context.Background(), "127.0.0.1:1")
	require.Error(t, err)
}

func TestPoll(t *testing.T) {
	n := 0
	require.NoError(t, poll(context.Background(), time.Second, time.Millisecond, "three calls", func() (bool, error) {
		n++
		return n == 3, nil
	}))
	err := poll(context.Background(), 20*time.Millisecond, time.Millisecond, "never", func() (bool, error) { return false, nil })
	require.ErrorIs(t, err, ErrCluster)
	require.ErrorContains(t, err, "never")
	boom := fmt.Errorf("boom")
	require.ErrorIs(t, poll(context.Background(), time.Second, time.Millisecond, "x", func() (bool, error) { return false, boom }), boom)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, poll(ctx, time.Second, time.Millisecond, "x", func() (bool, error) { return false, nil }), context.Canceled)
}

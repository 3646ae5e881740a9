package chaos

import (
	"testing"

	"github.com/grbd/grbd/internal/config"
	"github.com/stretchr/testify/require"
)

// A scenario's replication settings land in the config's replication
// section (a second top-level replication key would not parse).
func TestRenderReplicationSettings(t *testing.T) {
	c := &Cluster{cfg: ClusterConfig{Protocol: "A", Replication: "congestion-fill: 1MiB\non-congestion: block\n",
		DeviceSize: "64MiB", JournalMaxSize: "32MiB", JournalSegmentSize: "4MiB", JournalSync: "flush"}}
	m := &Member{Name: "n0", Address: "127.0.0.1:7000", NBD: "127.0.0.1:7001", Admin: "127.0.0.1:7002", DataDir: "/tmp/n0"}
	cfg, err := config.Parse("c.yaml", []byte(c.render([]*Member{m}, false)))
	require.NoError(t, err)
	require.Equal(t, config.Size(1<<20), cfg.Replication.CongestionFill)
	require.Equal(t, config.CongestionBlock, cfg.Replication.OnCongestion)
	require.Equal(t, "A", cfg.Replication.Protocol)
}

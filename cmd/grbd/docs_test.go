package main

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/grbd/grbd/internal/metrics"
	"github.com/stretchr/testify/require"
)

// TestCLIReferenceCoversEverything keeps docs/cli.md honest: every command
// and every metric family a member exports is described there.
func TestCLIReferenceCoversEverything(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/cli.md")
	require.NoError(t, err)
	doc := string(b)
	for _, c := range newRootCommand().Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		require.Contains(t, doc, "`"+c.Name(), "docs/cli.md does not mention grbd %s", c.Name())
		for _, sub := range c.Commands() {
			require.Contains(t, doc, c.Name()+" "+sub.Name(), "docs/cli.md does not mention grbd %s %s", c.Name(), sub.Name())
		}
	}

	c := startCluster(t, 2, true, "4MiB", "")
	c.roles()
	for _, admin := range []string{c.cfg.Nodes[0].Admin, c.cfg.Witness.Admin} {
		resp, err := http.Get("http://" + admin + "/metrics")
		require.NoError(t, err)
		fams, err := metrics.Parse(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		for name := range fams {
			require.True(t, strings.Contains(doc, "`"+name+"`"), "metric %s is not in docs/cli.md", name)
		}
	}
}

package proxy

import (
	"errors"
	"testing"

	"github.com/grbd/grbd/internal/config"
	"github.com/grbd/grbd/internal/member"
	"github.com/grbd/grbd/node"
	"github.com/stretchr/testify/require"
)

func TestPickPrimary(t *testing.T) {
	nodes := []config.Member{{Name: "a", NBD: "a:1"}, {Name: "b", NBD: "b:1"}}
	st := func(role, disk string, serving bool, epoch uint64) statusAnswer {
		return statusAnswer{st: &node.Status{Role: role, Disk: disk, DeviceSize: 1 << 20,
			Quorum: member.QuorumStatus{Serving: serving, Epoch: epoch}}}
	}
	down := statusAnswer{err: errors.New("unreachable")}
	for _, tc := range []struct {
		name    string
		answers []statusAnswer
		want    string // "" : none
	}{
		{"the serving primary", []statusAnswer{st(node.RolePrimary, node.DiskUpToDate, true, 2), st(node.RoleSecondary, node.DiskUpToDate, false, 2)}, "a"},
		{"not serving: fenced", []statusAnswer{st(node.RolePrimary, node.DiskUpToDate, false, 2), down}, ""},
		{"the newest epoch of two", []statusAnswer{st(node.RolePrimary, node.DiskUpToDate, true, 2), st(node.RolePrimary, node.DiskUpToDate, true, 3)}, "b"},
		// A primary whose disk failed holds its lease until the role goes
		// back, and fails every request: wait for the peer instead.
		{"detached: its disk failed", []statusAnswer{st(node.RolePrimary, node.DiskFailed, true, 2), st(node.RoleSecondary, node.DiskUpToDate, false, 2)}, ""},
		{"detached, and the peer took over", []statusAnswer{st(node.RolePrimary, node.DiskFailed, true, 2), st(node.RolePrimary, node.DiskUpToDate, true, 3)}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pickPrimary(nodes, tc.answers)
			if tc.want == "" {
				require.ErrorIs(t, err, ErrNotPrimary)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, p.Name)
		})
	}
}

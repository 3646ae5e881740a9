package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// MemberStatus is the part of a member's GET /status this harness reads. It
// is decoded leniently (unknown fields ignored) so that the admin API can
// grow without breaking the suite.
type MemberStatus struct {
	Name string `json:"name"`
	Role string `json:"role"` // Primary or Secondary
	Disk string `json:"disk"` // UpToDate, Outdated, Inconsistent
	NBD  string `json:"nbd"`
	// DeviceSize is the exported device's size in bytes.
	DeviceSize int64        `json:"device_size"`
	Peers      []PeerStatus `json:"peers"`
	Journal    struct {
		LastSeq       uint64 `json:"last_seq"`
		DurableSeq    uint64 `json:"durable_seq"`
		ExtentRecords uint64 `json:"extent_records"`
	} `json:"journal"`
	// Checksums counts corrupt blocks found on read and repaired.
	Checksums struct {
		Errors     uint64 `json:"errors"`
		Repaired   uint64 `json:"repaired"`
		Unrepaired uint64 `json:"unrepaired"`
	} `json:"checksums"`
	// Quorum is the control plane's view (builds with the quorum; nil
	// before): a primary that lost its lease still says Primary but is not
	// serving.
	Quorum *struct {
		Epoch    uint64   `json:"epoch"`
		Serving  bool     `json:"serving"`
		Outdated []string `json:"outdated"`
		Phase    string   `json:"phase"` // "member", or why not (e.g. "awaiting replace ...")
	} `json:"quorum"`
	// Identity is the data identity (builds with data identities; nil
	// before): Promotable says whether the control plane may promote it.
	Identity *struct {
		Disk       string `json:"disk"`
		Recorded   string `json:"recorded"`
		Promotable bool   `json:"promotable"`
	} `json:"identity"`
}

// serving reports whether a primary may complete I/O (always true for
// builds without the quorum).
func (s MemberStatus) serving() bool { return s.Quorum == nil || s.Quorum.Serving }

// PeerStatus is one peer as a member sees it.
type PeerStatus struct {
	Name       string `json:"name"`
	Connection string `json:"connection"` // Connected, Connecting, Disconnected
	Disk       string `json:"disk"`
	AckedSeq   uint64 `json:"acked_seq"`
	Behind     uint64 `json:"behind"`
	// ResyncDone of ResyncTotal bytes of the running region resync.
	ResyncTotal int64 `json:"resync_bytes_total"`
	ResyncDone  int64 `json:"resync_bytes_done"`
}

// peer finds a peer by name.
func (s MemberStatus) peer(name string) (PeerStatus, bool) {
	for _, p := range s.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return PeerStatus{}, false
}

// Values of the admin API that the harness compares against.
const (
	RolePrimary   = "Primary"
	DiskUpToDate  = "UpToDate"
	ConnConnected = "Connected"
)

// adminHTTP talks to admin endpoints: short timeouts, no idle connections
// to members that may be killed at any moment.
var adminHTTP = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// Status fetches a member's status.
func (c *Cluster) Status(ctx context.Context, name string) (MemberStatus, error) {
	var st MemberStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Member(name).Admin+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := adminHTTP.Do(req)
	if err != nil {
		return st, fmt.Errorf("chaos: status of %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("chaos: status of %s: HTTP %d", name, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("chaos: status of %s: %w", name, err)
	}
	return st, nil
}

// Primary implements Target: the one data node that answers with role
// Primary (preferring the one serving, when a deposed primary has not
// noticed yet), and its NBD URI. ErrNoPrimary and ErrManyPrimaries are
// transient during a failover; callers retry.
func (c *Cluster) Primary(ctx context.Context) (string, string, error) {
	var all, serving []string
	uris := map[string]string{}
	for _, m := range c.DataNodes() {
		if !c.Running(m.Name) {
			continue
		}
		st, err := c.Status(ctx, m.Name)
		if err != nil || st.Role != RolePrimary {
			continue
		}
		uris[m.Name] = cmp.Or(st.NBD, "nbd://"+m.NBD)
		all = append(all, m.Name)
		if st.serving() {
			serving = append(serving, m.Name)
		}
	}
	switch {
	case len(serving) == 1:
		return serving[0], uris[serving[0]], nil
	case len(all) == 1:
		return all[0], uris[all[0]], nil
	case len(all) == 0:
		return "", "", ErrNoPrimary
	}
	return "", "", fmt.Errorf("%w: %s", ErrManyPrimaries, strings.Join(all, ", "))
}

// WaitPrimary polls until a data node other than not (which may be "") is the
// only primary, and returns it.
func (c *Cluster) WaitPrimary(ctx context.Context, not string) (string, error) {
	var last error
	for {
		name, _, err := c.Primary(ctx)
		if err == nil && name != not {
			return name, nil
		}
		if err == nil {
			err = fmt.Errorf("%s is still the primary", not)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: waiting for a primary: %v", ErrTimeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// InSync reports whether the primary sees every other data node connected,
// UpToDate and with nothing behind; why says what is missing otherwise.
func (c *Cluster) InSync(ctx context.Context) (ok bool, why string) {
	name, _, err := c.Primary(ctx)
	if err != nil {
		return false, err.Error()
	}
	st, err := c.Status(ctx, name)
	if err != nil {
		return false, err.Error()
	}
	for _, m := range c.DataNodes() {
		if m.Name == name {
			continue
		}
		p, ok := st.peer(m.Name)
		if !ok || p.Connection != ConnConnected || p.Disk != DiskUpToDate || p.Behind != 0 {
			return false, fmt.Sprintf("primary %s sees %s as %+v", name, m.Name, p)
		}
	}
	return true, ""
}

// WaitInSync waits until InSync holds.
func (c *Cluster) WaitInSync(ctx context.Context) error {
	for {
		ok, why := c.InSync(ctx)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: cluster not in sync: %s", ErrTimeout, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Admin API values the harness waits for (see node.Status; the field names
// are part of grbd's admin API).
const (
	rolePrimary   = "Primary"
	diskUpToDate  = "UpToDate"
	connConnected = "Connected"
)

// nodeStatus is the part of a data node's `GET /status` the harness reads.
type nodeStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Disk    string `json:"disk"`
	NBD     string `json:"nbd"`
	Journal struct {
		LastSeq uint64 `json:"last_seq"`
	} `json:"journal"`
	IO struct {
		BytesWritten uint64 `json:"bytes_written"`
	} `json:"io"`
	Peers []peerStatus `json:"peers"`
}

type peerStatus struct {
	Name         string `json:"name"`
	Connection   string `json:"connection"`
	Disk         string `json:"disk"`
	Behind       uint64 `json:"behind"`
	CatchupBytes uint64 `json:"catchup_bytes"`
	SentBytes    uint64 `json:"sent_bytes"`
}

// peer returns the named peer's entry.
func (s nodeStatus) peer(name string) (peerStatus, bool) {
	for _, p := range s.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return peerStatus{}, false
}

// inSync reports whether every named peer is connected, UpToDate and has
// nothing outstanding, as seen by this (primary) node.
func (s nodeStatus) inSync(peers []string) bool {
	for _, name := range peers {
		p, ok := s.peer(name)
		if !ok || p.Connection != connConnected || p.Disk != diskUpToDate || p.Behind != 0 {
			return false
		}
	}
	return true
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// fetchStatus asks the admin endpoint at addr (host:port) for its status.
func fetchStatus(ctx context.Context, addr string) (nodeStatus, error) {
	var st nodeStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return st, fmt.Errorf("bench: status %s: %w", addr, err)
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("bench: status %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, fmt.Errorf("bench: status %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("bench: status %s: %s", addr, resp.Status)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("bench: status %s: %w", addr, err)
	}
	return st, nil
}

// poll calls f every interval until it returns true or an error, ctx ends,
// or timeout passes (then it returns ErrCluster wrapped with what).
func poll(ctx context.Context, timeout, interval time.Duration, what string, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := f()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%w: %s within %v", ErrCluster, what, timeout)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
)

// Footprint is what a replicated system cost in network and storage for
// everything written during the run: the bytes its primary sent on the
// data streams of its peers per MiB written through NBD, and the disk its
// data nodes' images occupy. It compares erasure coding with mirrors
// (docs/erasure.md).
type Footprint struct {
	System       string  `json:"system"`
	WrittenBytes uint64  `json:"written_bytes"`   // NBD payload written on the primary
	SentBytes    uint64  `json:"peer_sent_bytes"` // data-stream bytes to every peer, summed
	SentPerMiB   float64 `json:"peer_bytes_per_mib_written"`
	// StorageBytes is the allocated size of every data node's image
	// (st_blocks), summed; journals are not included.
	StorageBytes int64   `json:"storage_bytes"`
	StorageRatio float64 `json:"storage_per_device_byte"`
}

// footprinter is the optional System capability behind the footprint table.
type footprinter interface {
	footprint(ctx context.Context, size int64) (Footprint, error)
}

// footprint reads the primary's status and stats every data node's image.
func (g *GrbdCluster) footprint(ctx context.Context, size int64) (Footprint, error) {
	f := Footprint{System: g.Label}
	_, st, ok := g.primary(ctx, "")
	if !ok {
		return f, fmt.Errorf("%w: %s: no primary to read traffic from", ErrCluster, g.Label)
	}
	f.WrittenBytes = st.IO.BytesWritten
	for _, p := range st.Peers {
		f.SentBytes += p.SentBytes
	}
	if f.WrittenBytes > 0 {
		f.SentPerMiB = float64(f.SentBytes) / (float64(f.WrittenBytes) / (1 << 20))
	}
	for _, m := range g.dataNodes() {
		fi, err := os.Stat(filepath.Join(filepath.Dir(g.cfgPath), m.name, "data.img"))
		if err != nil {
			return f, fmt.Errorf("bench: %s: %w", g.Label, err)
		}
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			f.StorageBytes += s.Blocks * 512
		} else {
			f.StorageBytes += fi.Size()
		}
	}
	f.StorageRatio = float64(f.StorageBytes) / float64(size)
	return f, nil
}

// writeFootprints prints the footprint table.
func writeFootprints(w io.Writer, fs []Footprint) error {
	if len(fs) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nnetwork and storage of the replicated systems over the whole run")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tMiB written\tpeer bytes sent per MiB written\tstorage MiB (images)\tstorage / device\t")
	for _, f := range fs {
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f MiB\t%.0f\t%.2fx\t\n", f.System, float64(f.WrittenBytes)/(1<<20),
			f.SentPerMiB/(1<<20), float64(f.StorageBytes)/(1<<20), f.StorageRatio)
	}
	return tw.Flush()
}

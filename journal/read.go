package journal

import (
	"fmt"

	"github.com/grbd/grbd/internal/extent"
)

// ReadRecords calls fn, in seq order, for every retained record with
// Seq >= from that was appended before the call: from, from+1 and so on up
// to LastSeq, without a hole. It returns ErrCompacted when records at or
// above from are no longer in the journal (also when a seq up to LastSeq is
// missing: fn had the records before the hole), or when an extent record's
// blocks no longer hold its data (a later write), and fn's error if fn
// fails. w.Data is only valid during the call of fn. fn runs without any
// journal lock held; appends and checkpoints go on meanwhile (a segment
// freed meanwhile stays readable until ReadRecords returns).
func (j *Journal) ReadRecords(from uint64, fn func(Write) error) error {
	type snap struct {
		s   *segment
		end int64
	}
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	if first := j.segs[0].firstSeq; max(from, 1) < first {
		j.mu.Unlock()
		return fmt.Errorf("%w: from %d, oldest retained %d", ErrCompacted, from, first)
	}
	last := j.highSeq() // the position the records must reach
	var snaps []snap
	for _, s := range j.segs {
		if !s.empty() && s.lastSeq >= from {
			s.refs++
			snaps = append(snaps, snap{s, s.size})
		}
	}
	j.mu.Unlock()
	defer func() {
		for _, sn := range snaps {
			j.release(sn.s)
		}
	}()
	var r segReader
	var ebuf []byte      // extent records' data, read from data.img
	next := max(from, 1) // the seq the next record passed to fn must have
	for _, sn := range snaps {
		r = segReader{f: sn.s.f, end: sn.end, buf: r.buf[:0]}
		for off := int64(segHeaderSize); off < sn.end; {
			rec, n, derr, ioerr := r.record(off)
			if ioerr != nil {
				return fmt.Errorf("journal: read segment %d: %w", sn.s.num, ioerr)
			}
			if derr == nil && rec.Salt != sn.s.salt {
				derr = fmt.Errorf("%w: foreign salt %#x", ErrCorrupt, rec.Salt)
			}
			if derr != nil {
				return fmt.Errorf("journal: segment %s offset %d: %w", segName(sn.s.num), off, derr)
			}
			if rec.Seq >= from {
				if rec.Seq != next {
					// A hole (records a checkpoint covered, lost to a
					// crash or a damaged end of a segment): passing over
					// it would leave the reader without those writes.
					return fmt.Errorf("%w: records %d to %d are not in the journal", ErrCompacted, next, rec.Seq-1)
				}
				next++
				w := rec.Write
				if rec.InPlace {
					var err error
					if ebuf, err = j.readExtent(&rec, ebuf); err != nil {
						return err
					}
					w.Data = ebuf
				}
				if err := fn(w); err != nil {
					return err
				}
			}
			off += int64(n)
		}
	}
	if next <= last {
		// A hole at the end (the checkpoint or in-place writes above the
		// last record): the caller would take last as reached.
		return fmt.Errorf("%w: records %d to %d are not in the journal", ErrCompacted, next, last)
	}
	return nil
}

// ChangedSince returns the regions (RegionSize granularity, adjacent ones
// merged, the last one clipped to the device) whose last write has a seq
// above seq. It holds the append lock while it scans the region table.
func (j *Journal) ChangedSince(seq uint64) []extent.Extent {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []extent.Extent
	for r, s := range j.regions {
		if s <= seq {
			continue
		}
		off := uint64(r) * uint64(j.regionSize)
		end := min(off+uint64(j.regionSize), uint64(j.devSize.Load()))
		if k := len(out) - 1; k >= 0 && out[k].End() == off {
			out[k].Length = end - out[k].Offset
			continue
		}
		out = append(out, extent.Extent{Offset: off, Length: end - off})
	}
	return out
}

// LastWriteSeq is the seq of the newest write that touched [off,
// off+length) (at RegionSize granularity: a write next to the range may
// count), 0 if none since the store was created. It takes the append lock.
func (j *Journal) LastWriteSeq(off, length int64) uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	var seq uint64
	if length <= 0 {
		return 0
	}
	for r := off / j.regionSize; r <= (off+length-1)/j.regionSize && r < int64(len(j.regions)); r++ {
		seq = max(seq, j.regions[r])
	}
	return seq
}

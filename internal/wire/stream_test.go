package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// writeAll frames msgs into one stream.
func writeAll(t *testing.T, msgs ...Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range msgs {
		require.NoError(t, w.WriteMsg(m))
	}
	require.NoError(t, w.Flush())
	return buf.Bytes()
}

// TestStream sends every case on one stream, through readers that return
// data in different chunkings, keeping clones of every message until the end.
func TestStream(t *testing.T) {
	cases := msgCases(false)
	var msgs []Message
	for _, c := range cases {
		msgs = append(msgs, c.msg)
	}
	stream := writeAll(t, msgs...)
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, rc := range readers {
		t.Run(rc.name, func(t *testing.T) {
			r := NewReader(rc.wrap(bytes.NewReader(stream)))
			var kept []Message
			for range cases {
				m, err := r.ReadMsg()
				require.NoError(t, err)
				kept = append(kept, Clone(m))
			}
			_, err := r.ReadMsg()
			require.Equal(t, io.EOF, err)
			for i, c := range cases {
				require.Equal(t, c.decoded(), kept[i], c.name)
			}
		})
	}
}

// TestReaderReuse documents the ownership rule: a message from ReadMsg is
// overwritten by the next read of its type; a Clone is not.
func TestReaderReuse(t *testing.T) {
	stream := writeAll(t,
		&Write{Seq: 1, Data: []byte("first")},
		&Write{Seq: 2, Data: []byte("other")},
	)
	r := NewReader(bytes.NewReader(stream))
	m1, err := r.ReadMsg()
	require.NoError(t, err)
	kept := Clone(m1)
	m2, err := r.ReadMsg()
	require.NoError(t, err)
	require.Same(t, m1, m2, "the Reader reuses its Write")
	require.Equal(t, "other", string(m1.(*Write).Data), "m1 was overwritten")
	require.Equal(t, &Write{Seq: 1, Data: []byte("first")}, kept)
}

func TestClone(t *testing.T) {
	require.Nil(t, Clone(nil))
	require.Equal(t, Message((*Write)(nil)), Clone((*Write)(nil)))
	for _, c := range msgCases(false) {
		t.Run(c.name, func(t *testing.T) {
			m := Clone(c.msg)
			require.Equal(t, c.msg, m)
			require.NotSame(t, c.msg, m)
			switch v := m.(type) {
			case *Write:
				if len(v.Data) > 0 {
					v.Data[0]++
					require.NotEqual(t, c.msg, m, "Data is shared")
				}
			case *ResyncData:
				if len(v.Data) > 0 {
					v.Data[0]++
					require.NotEqual(t, c.msg, m, "Data is shared")
				}
			case *VerifyReply:
				if len(v.Sums) > 0 {
					v.Sums[0]++
					require.NotEqual(t, c.msg, m, "Sums is shared")
				}
			}
		})
	}
}

// TestReaderSticky: after a fault the Reader does not resume, even when the
// next bytes happen to form a valid frame.
func TestReaderSticky(t *testing.T) {
	bad := AppendFrame(nil, &Ping{ID: 1})
	bad[HeaderSize] ^= 1
	stream := append(bad, AppendFrame(nil, &Ping{ID: 2})...)
	r := NewReader(bytes.NewReader(stream))
	_, err := r.ReadMsg()
	require.ErrorIs(t, err, ErrChecksum)
	m, err2 := r.ReadMsg()
	require.Nil(t, m)
	require.Equal(t, err, err2)
}

func TestReaderIOErrors(t *testing.T) {
	errNet := errors.New("connection reset")
	frame := AppendFrame(nil, &Write{Seq: 1, Data: fill(100)})
	cases := []struct {
		name string
		r    io.Reader
	}{
		{"before header", iotest.ErrReader(errNet)},
		{"in header", io.MultiReader(bytes.NewReader(frame[:5]), iotest.ErrReader(errNet))},
		{"in body", io.MultiReader(bytes.NewReader(frame[:HeaderSize+10]), iotest.ErrReader(errNet))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewReader(c.r).ReadMsg()
			require.ErrorIs(t, err, errNet)
			require.NotErrorIs(t, err, ErrTruncated, "an I/O error is not a truncation")
			require.Nil(t, sentinelOf(err))
		})
	}
}

// failWriter fails every write after the first ok bytes.
type failWriter struct {
	ok  int
	err error
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.ok {
		w.ok -= len(p)
		return len(p), nil
	}
	n := w.ok
	w.ok = 0
	return n, w.err
}

func TestWriterIOErrors(t *testing.T) {
	errNet := errors.New("broken pipe")
	t.Run("on flush", func(t *testing.T) {
		w := NewWriter(&failWriter{err: errNet})
		require.NoError(t, w.WriteMsg(&Ping{ID: 1}))
		require.ErrorIs(t, w.Flush(), errNet)
		require.ErrorIs(t, w.WriteMsg(&Write{Data: fill(bufSize)}), errNet, "sticky")
	})
	t.Run("large payload", func(t *testing.T) {
		w := NewWriter(&failWriter{ok: 100, err: errNet})
		require.NoError(t, w.WriteMsg(&Ping{ID: 1}))
		require.ErrorIs(t, w.WriteMsg(&Write{Data: fill(2 * bufSize)}), errNet)
	})
}

// recWriter records the first byte address of each Write call.
type recWriter struct {
	bytes.Buffer
	firsts []*byte
}

func (w *recWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		w.firsts = append(w.firsts, &p[0])
	}
	return w.Buffer.Write(p)
}

// TestWriterLargePayloadNotCopied: a payload larger than the buffer reaches
// the underlying writer as the caller's own slice.
func TestWriterLargePayloadNotCopied(t *testing.T) {
	rec := &recWriter{}
	w := NewWriter(rec)
	data := fill(1 << 20)
	require.NoError(t, w.WriteMsg(&Ping{ID: 1}))
	require.NoError(t, w.WriteMsg(&Write{Seq: 1, Data: data}))
	require.NoError(t, w.Flush())
	require.Contains(t, rec.firsts, &data[0])

	r := NewReader(&rec.Buffer)
	_, err := r.ReadMsg()
	require.NoError(t, err)
	m, err := r.ReadMsg()
	require.NoError(t, err)
	require.Equal(t, &Write{Seq: 1, Data: data}, m)
}

func TestNewWriterKeepsBufio(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 16)
	w := NewWriter(bw)
	require.Same(t, bw, w.bw)
	require.NoError(t, w.WriteMsg(&Write{Seq: 1, Data: fill(100)}))
	require.NoError(t, w.Flush())
	m, _, err := DecodeFrame(buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, &Write{Seq: 1, Data: fill(100)}, m)
}

// cycleReader repeats b forever.
type cycleReader struct {
	b   []byte
	off int
}

func (r *cycleReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// TestHotPathAllocs: the write and read paths allocate nothing once warm,
// including for a message built fresh on each call.
func TestHotPathAllocs(t *testing.T) {
	data := fill(4096)
	maxStr := string(fill(MaxString))
	vs := sums(5000)
	writes := []struct {
		name string
		fn   func(w *Writer) error
	}{
		{"fresh Write", func(w *Writer) error { return w.WriteMsg(&Write{Seq: 1, FUA: true, Data: data}) }},
		{"fresh Ack", func(w *Writer) error { return w.WriteMsg(&Ack{Seq: 1, Level: AckDurable}) }},
		{"max Hello", func(w *Writer) error { return w.WriteMsg(&Hello{Cluster: maxStr, From: maxStr}) }},
		{"VerifyReply", func(w *Writer) error { return w.WriteMsg(&VerifyReply{ID: 1, Sums: vs}) }},
	}
	for _, c := range writes {
		t.Run("write/"+c.name, func(t *testing.T) {
			w := NewWriter(io.Discard)
			allocs := testing.AllocsPerRun(200, func() {
				if err := c.fn(w); err != nil {
					panic(err)
				}
			})
			require.Zero(t, allocs)
		})
	}
	reads := []struct {
		name string
		msg  Message
	}{
		{"Write 4KiB", &Write{Seq: 1, Data: data}},
		{"Ack", &Ack{Seq: 1, Level: AckReceived}},
		{"ResyncData 4KiB", &ResyncData{AsOf: 1, Data: data}},
		{"VerifyReply", &VerifyReply{Sums: sums(100)}},
	}
	for _, c := range reads {
		t.Run("read/"+c.name, func(t *testing.T) {
			r := NewReader(&cycleReader{b: AppendFrame(nil, c.msg)})
			_, err := r.ReadMsg() // warm up the body buffer
			require.NoError(t, err)
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := r.ReadMsg(); err != nil {
					panic(err)
				}
			})
			require.Zero(t, allocs)
		})
	}
}

// TestReaderGrowsWithData: a header announcing a large body costs memory only
// as the body's bytes arrive.
func TestReaderGrowsWithData(t *testing.T) {
	hdr := sealRaw(Magic, 1, byte(TypeWrite), 0, MaxBody, nil)
	r := NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(make([]byte, 100))))
	var err error
	n := allocatedBytes(func() { _, err = r.ReadMsg() })
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.LessOrEqual(t, cap(r.body), minGrow)
	require.Less(t, n, uint64(4*minGrow))

	// Bodies of changing sizes, growing and shrinking, on one Reader.
	var msgs []Message
	for i, size := range []int{10, 100_000, 5, 3 << 20, 200_000, minGrow, minGrow + 1, 0} {
		msgs = append(msgs, &Write{Seq: uint64(i), Data: fill(size)})
	}
	r = NewReader(iotest.HalfReader(bytes.NewReader(writeAll(t, msgs...))))
	for _, want := range msgs {
		m, err := r.ReadMsg()
		require.NoError(t, err)
		require.Equal(t, want.(*Write).Seq, m.(*Write).Seq)
		require.True(t, bytes.Equal(want.(*Write).Data, m.(*Write).Data))
	}
	_, err = r.ReadMsg()
	require.Equal(t, io.EOF, err)
}

// TestReaderLimit: a frame longer than SetLimit is ErrTooLarge from its
// header alone; frames within it pass; the Reader consumes exactly the frames
// it returns from a caller's bufio.Reader.
func TestReaderLimit(t *testing.T) {
	small := AppendFrame(nil, &Ping{ID: 1})
	big := AppendFrame(nil, &Write{Seq: 1, Data: make([]byte, 100)})
	br := bufio.NewReader(bytes.NewReader(append(append(bytes.Clone(small), "tail"...), big...)))
	r := NewReader(br)
	r.SetLimit(64)
	m, err := r.ReadMsg()
	require.NoError(t, err)
	require.Equal(t, &Ping{ID: 1}, m)
	tail := make([]byte, 4)
	_, err = io.ReadFull(br, tail)
	require.NoError(t, err)
	require.Equal(t, "tail", string(tail), "the Reader read past its frame")
	_, err = r.ReadMsg()
	require.ErrorIs(t, err, ErrTooLarge)

	r = NewReader(bytes.NewReader(big))
	r.SetLimit(0)
	_, err = r.ReadMsg()
	require.NoError(t, err, "SetLimit(0) restores MaxBody")
}

// A Nack built from a long reason (a wrapped error) still encodes: NewNack
// cuts the reason to MaxString bytes.
func TestNewNackCutsLongReason(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 3*MaxString))
	m, err := NewReader(bytes.NewReader(writeAll(t, NewNack(7, NackIO, long)))).ReadMsg()
	require.NoError(t, err)
	require.Equal(t, &Nack{Seq: 7, Code: NackIO, Reason: long[:MaxString]}, m)
}

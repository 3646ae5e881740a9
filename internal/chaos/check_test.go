package chaos

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCodec(t *testing.T) {
	c := Codec{Run: 42}
	buf := make([]byte, BlockSize)
	c.Encode(buf, 7, 1234, 3)
	v, err := c.Decode(buf, 7)
	require.NoError(t, err)
	require.Equal(t, uint64(1234), v)

	other := make([]byte, BlockSize)
	c.Encode(other, 7, 1235, 3)
	require.NotEqual(t, buf[100:200], other[100:200], "fill depends on the value")

	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		block  int
		want   error
		value  uint64
	}{
		{name: "zeroes", mutate: func([]byte) []byte { return make([]byte, BlockSize) }, value: 0},
		{name: "flipped bit", mutate: func(b []byte) []byte { b[2000] ^= 0x10; return b }, want: ErrCorruptBlock},
		{name: "flipped crc", mutate: func(b []byte) []byte { b[BlockSize-1] ^= 1; return b }, want: ErrCorruptBlock},
		{name: "other block", mutate: func(b []byte) []byte { return b }, block: 8, want: ErrMisplacedBlock, value: 1234},
		{name: "other run", mutate: func(b []byte) []byte {
			Codec{Run: 43}.Encode(b, 7, 1234, 3)
			return b
		}, want: ErrCorruptBlock},
		{name: "short", mutate: func(b []byte) []byte { return b[:100] }, want: ErrCorruptBlock},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), buf...)
			block := 7
			if tc.block != 0 {
				block = tc.block
			}
			v, err := c.Decode(tc.mutate(b), block)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.value, v)
		})
	}
}

// h builds histories for the check tests: times in milliseconds.
type h struct {
	ops []Op
	id  uint64
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func (x *h) op(kind OpKind, block int, value uint64, call, ret int, out Outcome) *h {
	x.id++
	id := x.id
	if kind == OpWrite {
		id = value
	}
	x.ops = append(x.ops, Op{ID: id, Kind: kind, Block: block, Value: value, Call: ms(call), Return: ms(ret), Outcome: out, Client: len(x.ops) % 4})
	return x
}
func (x *h) w(b int, v uint64, c, r int) *h  { return x.op(OpWrite, b, v, c, r, OK) }
func (x *h) wu(b int, v uint64, c, r int) *h { return x.op(OpWrite, b, v, c, r, Unknown) }
func (x *h) rd(b int, v uint64, c, r int) *h { return x.op(OpRead, b, v, c, r, OK) }
func (x *h) fl(c, r int) *h                  { return x.op(OpFlush, 0, 0, c, r, OK) }
func (x *h) era(e int) *h                    { x.ops[len(x.ops)-1].Era = e; return x }
func (x *h) fua() *h                         { x.ops[len(x.ops)-1].FUA = true; return x }

func TestCheckLinearizable(t *testing.T) {
	cases := []struct {
		name  string
		hist  *h
		fresh bool
		want  []string // per era
	}{
		{name: "sequential", fresh: true, hist: new(h).w(0, 1, 0, 1).rd(0, 1, 2, 3).w(0, 2, 4, 5).rd(0, 2, 6, 7), want: []string{"Ok"}},
		{name: "stale read", fresh: true, hist: new(h).w(0, 1, 0, 1).w(0, 2, 2, 3).rd(0, 1, 4, 5), want: []string{"Illegal"}},
		{name: "concurrent write either order", fresh: true, hist: new(h).w(0, 1, 0, 10).w(0, 2, 1, 9).rd(0, 1, 11, 12), want: []string{"Ok"}},
		{name: "zeroes before any write", fresh: true, hist: new(h).rd(0, 0, 0, 1).w(0, 1, 2, 3), want: []string{"Ok"}},
		{name: "zeroes after a write", fresh: true, hist: new(h).w(0, 1, 0, 1).rd(0, 0, 2, 3), want: []string{"Illegal"}},
		{name: "unknown write may apply late", fresh: true, hist: new(h).wu(0, 1, 0, 1).w(0, 2, 2, 3).rd(0, 1, 10, 11), want: []string{"Ok"}},
		{name: "unknown write may never apply", fresh: true, hist: new(h).w(0, 2, 0, 1).wu(0, 1, 2, 3).rd(0, 2, 10, 11), want: []string{"Ok"}},
		{name: "unobserved unknown writes are dropped", fresh: true, hist: new(h).wu(0, 1, 0, 1).wu(0, 3, 0, 1).w(0, 2, 2, 3).rd(0, 2, 10, 11), want: []string{"Ok"}},
		{name: "corrupt read", fresh: true, hist: new(h).w(0, 1, 0, 1).rd(0, ValueCorrupt, 2, 3), want: []string{"Illegal"}},
		{name: "blocks are independent", fresh: true, hist: new(h).w(0, 1, 0, 1).w(1, 2, 0, 1).rd(1, 2, 2, 3).rd(0, 1, 2, 3), want: []string{"Ok"}},
		{
			name: "new era starts from any value", fresh: true,
			hist: new(h).w(0, 1, 0, 1).w(0, 2, 2, 3).rd(0, 1, 10, 11).era(1).rd(0, 1, 12, 13).era(1),
			want: []string{"Ok", "Ok"},
		},
		{
			name: "new era is still checked", fresh: true,
			hist: new(h).w(0, 1, 0, 1).rd(0, 1, 10, 11).era(1).w(0, 3, 12, 13).era(1).rd(0, 1, 14, 15).era(1),
			want: []string{"Ok", "Illegal"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := CheckLinearizable(tc.hist.ops, tc.fresh, 10*time.Second)
			var got []string
			for _, r := range res {
				got = append(got, r.Result)
				if r.Result == "Illegal" {
					require.NotEmpty(t, r.Blocks)
				}
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCheckDurability(t *testing.T) {
	cases := []struct {
		name string
		hist *h
		want []string // anomaly kinds
	}{
		{name: "flushed write survives", hist: new(h).w(0, 1, 0, 1).fl(2, 3).rd(0, 1, 10, 11)},
		{name: "flushed write lost", hist: new(h).w(0, 1, 0, 1).fl(2, 3).rd(0, 0, 10, 11).era(1), want: []string{AnomalyLostWrite}},
		{name: "unflushed write may be lost", hist: new(h).w(0, 1, 0, 1).rd(0, 0, 10, 11).era(1)},
		{name: "flush called before the write returned does not cover it", hist: new(h).w(0, 1, 0, 5).fl(2, 6).rd(0, 0, 10, 11).era(1)},
		{name: "read concurrent with the flush is not bound", hist: new(h).w(0, 1, 0, 1).fl(2, 8).rd(0, 0, 5, 11).era(1)},
		{name: "FUA write is durable at once", hist: new(h).w(0, 1, 0, 1).fua().rd(0, 0, 10, 11).era(1), want: []string{AnomalyLostWrite}},
		{name: "older durable value read", hist: new(h).w(0, 1, 0, 1).w(0, 2, 2, 3).fl(4, 5).rd(0, 1, 10, 11).era(1), want: []string{AnomalyLostWrite}},
		{name: "newer unflushed value read", hist: new(h).w(0, 1, 0, 1).fl(2, 3).w(0, 2, 4, 5).rd(0, 2, 10, 11).era(1)},
		{name: "concurrent write may win", hist: new(h).w(0, 1, 0, 10).w(0, 2, 1, 9).fl(11, 12).rd(0, 2, 20, 21).rd(0, 1, 22, 23)},
		{name: "unknown write may win", hist: new(h).w(0, 1, 0, 1).fl(2, 3).wu(0, 2, 4, 5).rd(0, 2, 20, 21)},
		{name: "flush after a power loss does not cover lost writes", hist: new(h).w(0, 1, 0, 1).fl(5, 6).era(1).rd(0, 0, 10, 11).era(1)},
		{name: "FUA survives a power loss", hist: new(h).w(0, 1, 0, 1).fua().fl(5, 6).era(1).rd(0, 0, 10, 11).era(1), want: []string{AnomalyLostWrite}},
		{name: "corrupt read", hist: new(h).rd(0, ValueCorrupt, 0, 1), want: []string{AnomalyCorrupt}},
		{name: "phantom read", hist: new(h).rd(0, 99, 0, 1), want: []string{AnomalyPhantom}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range CheckDurability(tc.hist.ops) {
				got = append(got, a.Kind)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestReportWritesVisualization(t *testing.T) {
	hist := new(h).w(0, 1, 0, 1).w(0, 2, 2, 3).rd(0, 1, 4, 5)
	r := &Report{Scenario: "unit", Seed: 7}
	r.Analyze(hist.ops, true, 5*time.Second)
	require.False(t, r.OK())
	require.True(t, r.Found(AnomalyLinearizability))
	dir := t.TempDir()
	require.NoError(t, r.Write(dir))
	for _, f := range []string{"report.json", "report.txt", "linearizability.html"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.NotZero(t, st.Size())
	}
	require.Contains(t, r.Summary(), "make chaos SEED=7 SCENARIO=unit")

	r.Expected = []string{AnomalyLinearizability}
	require.True(t, r.OK(), "an expected anomaly kind does not fail the run")
}

func TestMarkTorn(t *testing.T) {
	codec := Codec{Run: 9}
	enc := func(v uint64) []byte {
		b := make([]byte, BlockSize)
		codec.Encode(b, 0, v, 0)
		return b
	}
	mix := append(append([]byte(nil), enc(1)[:2000]...), enc(2)[2000:]...)
	garbage := append([]byte(nil), mix...)
	garbage[100] = enc(1)[100] ^ enc(2)[100] ^ 0xff // matches neither
	cases := []struct {
		name string
		hist *h
		raw  []byte
		want uint64
	}{
		{name: "mix of the old value and a write in flight", hist: new(h).w(0, 1, 0, 1).w(0, 2, 5, 20).rd(0, ValueCorrupt, 10, 15), raw: mix, want: ValueTorn},
		{name: "mix with an unknown write", hist: new(h).w(0, 1, 0, 1).wu(0, 2, 5, 6).rd(0, ValueCorrupt, 10, 15), raw: mix, want: ValueTorn},
		{name: "no write in flight", hist: new(h).w(0, 1, 0, 1).w(0, 2, 2, 3).rd(0, ValueCorrupt, 10, 15), raw: mix, want: ValueCorrupt},
		{name: "old value overwritten before the read", hist: new(h).w(0, 1, 0, 1).w(0, 3, 2, 3).w(0, 2, 5, 20).rd(0, ValueCorrupt, 10, 15), raw: mix, want: ValueCorrupt},
		{name: "bytes no candidate has", hist: new(h).w(0, 1, 0, 1).w(0, 2, 5, 20).rd(0, ValueCorrupt, 10, 15), raw: garbage, want: ValueCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ops := tc.hist.ops
			for i := range ops {
				ops[i].Client = 0 // as enc wrote them
			}
			ops[len(ops)-1].Raw = tc.raw
			markTorn(ops, codec)
			require.Equal(t, tc.want, ops[len(ops)-1].Value, ops[len(ops)-1].Err)
			if tc.want == ValueTorn {
				require.Empty(t, CheckDurability(ops))
				require.Equal(t, "Ok", CheckLinearizable(ops, true, 5*time.Second)[0].Result)
				require.Equal(t, 1, Count(ops).TornReads)
			}
		})
	}
}

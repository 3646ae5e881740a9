package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora under testdata/fuzz")

// FuzzDecodeFrame decodes arbitrary bytes, and the same bytes sealed into a
// frame with a valid checksum (so that the body decoders are reached, which
// random input almost never does past the CRC). It must never panic, and any
// frame that decodes must re-encode to exactly the bytes it came from.
func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		if len(data) >= 3 && len(data)-3 <= MaxBody {
			sealed := sealFrame(Type(data[0]), uint16(data[1])|uint16(data[2])<<8, data[3:])
			if err := checkDecode(t, sealed); err != nil {
				s := sentinelOf(err)
				require.True(t, s == ErrMalformed || s == ErrUnknownType, "sealed frame: %v", err)
			}
		}
	})
}

// checkDecode runs DecodeFrame on data and checks the invariants.
func checkDecode(t *testing.T, data []byte) error {
	in := bytes.Clone(data)
	m, n, err := DecodeFrame(data)
	require.Equal(t, in, data, "DecodeFrame modified its input")
	if err != nil {
		require.Nil(t, m)
		require.Zero(t, n)
		require.NotNil(t, sentinelOf(err), "unclassified error %v", err)
		return err
	}
	require.LessOrEqual(t, n, len(data))
	require.Equal(t, data[:n], AppendFrame(nil, m), "re-encoding differs")
	r := NewReader(bytes.NewReader(data[:n]))
	got, rerr := r.ReadMsg()
	require.NoError(t, rerr)
	require.Equal(t, m, got, "Reader and DecodeFrame disagree")
	return nil
}

// FuzzReader reads an arbitrary stream (or, with seal set, a stream of
// frames with valid checksums built from records in data) through a source
// returning at most chunk+1 bytes per Read, and checks every step against
// DecodeFrame on the remaining bytes: same messages, same error class,
// ErrTruncated where DecodeFrame wants more bytes, io.EOF only at a frame
// boundary, sticky errors.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, chunk byte, seal bool) {
		stream := data
		if seal {
			stream = sealRecords(data)
		}
		r := NewReader(&chunkReader{b: stream, max: int(chunk) + 1})
		rest := stream
		for {
			got, err := r.ReadMsg()
			want, n, derr := DecodeFrame(rest)
			if derr == nil {
				require.NoError(t, err)
				require.Equal(t, want, got)
				require.Equal(t, rest[:n], AppendFrame(nil, got))
				rest = rest[n:]
				continue
			}
			require.Error(t, err)
			require.Nil(t, got)
			switch {
			case len(rest) == 0:
				require.Equal(t, io.EOF, err)
			case errors.Is(derr, ErrShort):
				require.ErrorIs(t, err, ErrTruncated)
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			default:
				require.Equal(t, sentinelOf(derr), sentinelOf(err), "reader %v, DecodeFrame %v", err, derr)
			}
			_, again := r.ReadMsg()
			require.Equal(t, err, again, "errors are sticky")
			return
		}
	})
}

// sealRecords turns records {type u8, flags u16, n u8, body[n]} into frames
// with valid checksums; a last record shorter than announced keeps what is
// there.
func sealRecords(data []byte) []byte {
	var out []byte
	for len(data) >= 4 {
		typ, flags, n := Type(data[0]), uint16(data[1])|uint16(data[2])<<8, int(data[3])
		data = data[4:]
		n = min(n, len(data))
		out = append(out, sealFrame(typ, flags, data[:n])...)
		data = data[n:]
	}
	return out
}

// chunkReader returns at most max bytes per Read.
type chunkReader struct {
	b   []byte
	max int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.max)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// record encodes one sealRecords record.
func record(t Type, flags uint16, body []byte) []byte {
	return append([]byte{byte(t), byte(flags), byte(flags >> 8), byte(len(body))}, body...)
}

// seedCorpus is the committed seed corpus: file name to fuzz arguments.
func seedCorpus() map[string]map[string][]any {
	decode := map[string][]any{}
	reader := map[string][]any{}
	var stream []byte
	var records []byte
	for _, c := range msgCases(false) {
		frame := c.frame()
		decode[c.name] = []any{frame}
		stream = append(stream, frame...)
		// The sealed form of FuzzDecodeFrame: type, flags, body.
		decode[c.name+" sealed"] = []any{append([]byte{byte(c.msg.Type()), byte(c.flags), byte(c.flags >> 8)}, c.body...)}
		if len(c.body) <= 255 {
			records = append(records, record(c.msg.Type(), c.flags, c.body)...)
		}
	}
	ping := AppendFrame(nil, &Ping{ID: 1, Nanos: 2})
	decode["empty"] = []any{[]byte{}}
	decode["two frames"] = []any{append(bytes.Clone(ping), ping...)}
	decode["truncated"] = []any{ping[:len(ping)-1]}
	decode["too large"] = []any{sealRaw(Magic, 1, byte(TypeWrite), 0, 0xFFFFFFFF, nil)}
	decode["bad magic"] = []any{sealRaw(0, 1, byte(TypePing), 0, 16, ping[HeaderSize:])}
	decode["version 2"] = []any{sealRaw(Magic, 2, byte(TypePing), 0, 16, ping[HeaderSize:])}

	reader["all frames"] = []any{stream, byte(255), false}
	reader["all frames in 7-byte reads"] = []any{stream, byte(6), false}
	reader["truncated stream"] = []any{stream[:len(stream)-3], byte(255), false}
	reader["all records"] = []any{records, byte(255), true}
	reader["records in 1-byte reads"] = []any{records[:200], byte(0), true}
	reader["malformed record"] = []any{cat(record(TypePing, 0, u64(1)), record(TypeAck, 0, cat(u64(1), []byte{9}))), byte(3), true}
	return map[string]map[string][]any{"FuzzDecodeFrame": decode, "FuzzReader": reader}
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// marshalCorpus writes values in the "go test fuzz v1" file format.
func marshalCorpus(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		default:
			panic(fmt.Sprintf("corpus type %T", v))
		}
	}
	return b.Bytes()
}

// TestSeedCorpus checks that testdata/fuzz holds the seed corpus above (go
// test runs those files through the fuzz targets); -update-corpus rewrites it.
func TestSeedCorpus(t *testing.T) {
	for target, seeds := range seedCorpus() {
		t.Run(target, func(t *testing.T) {
			dir := filepath.Join("testdata", "fuzz", target)
			names := make([]string, 0, len(seeds))
			for name := range seeds {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				path := filepath.Join(dir, "seed-"+unsafeName.ReplaceAllString(name, "-"))
				want := marshalCorpus(seeds[name]...)
				if *updateCorpus {
					require.NoError(t, os.MkdirAll(dir, 0o755))
					require.NoError(t, os.WriteFile(path, want, 0o644))
					continue
				}
				got, err := os.ReadFile(path)
				require.NoError(t, err, "run go test -run TestSeedCorpus -update-corpus")
				require.True(t, bytes.Equal(want, got), "%s is stale: run go test -run TestSeedCorpus -update-corpus", path)
			}
		})
	}
}

package blockdev

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// BenchmarkServer drives the server in-process over loopback TCP with a
// pipelined client keeping qd requests in flight against a memory device.
// One op is one request; allocs/op counts both sides (the client allocates
// nothing per request).
func BenchmarkServer(b *testing.B) {
	for _, op := range []uint16{cmdWrite, cmdRead} {
		for _, bs := range []int{4 << 10, 64 << 10} {
			for _, qd := range []int{1, 32} {
				name := map[uint16]string{cmdWrite: "write", cmdRead: "read"}[op]
				b.Run(fmt.Sprintf("op=%s/bs=%dk/qd=%d", name, bs>>10, qd), func(b *testing.B) {
					benchQD(b, op, bs, qd)
				})
			}
		}
	}
}

func benchQD(b *testing.B, op uint16, bs, qd int) {
	const size = 256 << 20
	_, addr := startServer(b, newMemDev(size), Options{})
	c, _ := dialGo(b, addr, true)
	blocks := uint64(size / bs)

	tokens := make(chan struct{}, qd)
	sendErr := make(chan error, 1)
	b.SetBytes(int64(bs))
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		bw := bufio.NewWriterSize(c.nc, 256<<10)
		req := make([]byte, nbdproto.RequestHeaderSize)
		payload := make([]byte, bs)
		for i := range payload {
			payload[i] = byte(i)
		}
		for i := 0; i < b.N; i++ {
			select {
			case tokens <- struct{}{}:
			default: // queue full: push out what is buffered, then wait
				if err := bw.Flush(); err != nil {
					sendErr <- err
					return
				}
				tokens <- struct{}{}
			}
			off := (uint64(i) * 7919 % blocks) * uint64(bs)
			binary.BigEndian.PutUint32(req[0:], protocol.TRANSMISSION_MAGIC_REQUEST)
			binary.BigEndian.PutUint16(req[4:], 0)
			binary.BigEndian.PutUint16(req[6:], op)
			binary.BigEndian.PutUint64(req[8:], uint64(i))
			binary.BigEndian.PutUint64(req[16:], off)
			binary.BigEndian.PutUint32(req[24:], uint32(bs))
			_, _ = bw.Write(req)
			if op == cmdWrite {
				_, _ = bw.Write(payload)
			}
		}
		sendErr <- bw.Flush()
	}()

	var hdr [nbdproto.ReplyHeaderSize]byte
	for i := 0; i < b.N; i++ {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			b.Fatal(err)
		}
		if e := binary.BigEndian.Uint32(hdr[4:]); e != 0 {
			b.Fatalf("error reply %d", e)
		}
		if op == cmdRead {
			if _, err := c.br.Discard(bs); err != nil {
				b.Fatal(err)
			}
		}
		<-tokens
	}
	b.StopTimer()
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
}

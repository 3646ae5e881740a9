package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Reader decodes frames from a stream. It owns a bufio.Reader, one body
// buffer and one message value per type, all reused: see ReadMsg for what
// that means for the caller. Not safe for concurrent use.
//
// Memory: the body buffer grows to the largest frame read (at most MaxBody),
// as its bytes arrive rather than as announced, and is kept for the Reader's
// life.
type Reader struct {
	br    *bufio.Reader
	hdr   [HeaderSize]byte
	body  []byte
	limit int   // largest body accepted; 0 means MaxBody
	err   error // sticky: the stream position is unknown after any error
	msgs  slots
	codec codec // decodes every body: a fresh one would escape through the Message interface, an allocation per read
}

// slots holds the reused message values.
type slots struct {
	hello         Hello
	write         Write
	zero          Zero
	ack           Ack
	flush         Flush
	flushAck      FlushAck
	resyncRequest ResyncRequest
	resyncData    ResyncData
	resyncDone    ResyncDone
	nack          Nack
	ping          Ping
	pong          Pong
	verifyRequest VerifyRequest
	verifyReply   VerifyReply
	streamOpen    StreamOpen
	control       Control
	history       History
	extents       Extents
	authChallenge AuthChallenge
	authProof     AuthProof
	resize        Resize
	blockRequest  BlockRequest
	blockData     BlockData
	progress      ResyncProgress
	commit        Commit
	shardState    ShardState
	shardReply    ShardStateReply
	shardSettle   ShardSettle
	shardRead     ShardRead
	shardData     ShardData
}

func (s *slots) get(t Type) Message {
	switch t {
	case TypeHello:
		return &s.hello
	case TypeWrite:
		return &s.write
	case TypeZero:
		return &s.zero
	case TypeAck:
		return &s.ack
	case TypeFlush:
		return &s.flush
	case TypeFlushAck:
		return &s.flushAck
	case TypeResyncRequest:
		return &s.resyncRequest
	case TypeResyncData:
		return &s.resyncData
	case TypeResyncDone:
		return &s.resyncDone
	case TypeNack:
		return &s.nack
	case TypePing:
		return &s.ping
	case TypePong:
		return &s.pong
	case TypeVerifyRequest:
		return &s.verifyRequest
	case TypeVerifyReply:
		return &s.verifyReply
	case TypeStreamOpen:
		return &s.streamOpen
	case TypeControl:
		return &s.control
	case TypeHistory:
		return &s.history
	case TypeExtents:
		return &s.extents
	case TypeAuthChallenge:
		return &s.authChallenge
	case TypeAuthProof:
		return &s.authProof
	case TypeResize:
		return &s.resize
	case TypeBlockRequest:
		return &s.blockRequest
	case TypeBlockData:
		return &s.blockData
	case TypeResyncProgress:
		return &s.progress
	case TypeCommit:
		return &s.commit
	case TypeShardState:
		return &s.shardState
	case TypeShardStateReply:
		return &s.shardReply
	case TypeShardSettle:
		return &s.shardSettle
	case TypeShardRead:
		return &s.shardRead
	case TypeShardData:
		return &s.shardData
	}
	return nil
}

// NewReader returns a Reader on r. A *bufio.Reader is used as is (the
// caller may go on reading the stream through it after the last frame it
// wants: the Reader consumes exactly the frames it returns); anything else is
// wrapped in a 64 KiB one.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, bufSize)
	}
	return &Reader{br: br}
}

// SetLimit lowers the largest body the Reader accepts to n bytes (n <= 0 or
// n > MaxBody: MaxBody): a longer frame is ErrTooLarge, refused from its
// header. A handshake reads its few small frames from an unauthenticated
// peer under a small limit and raises it once the peer is known.
func (r *Reader) SetLimit(n int) {
	if n <= 0 || n > MaxBody {
		n = 0
	}
	r.limit = n
}

// Buffered is the number of bytes already read from the stream and not
// yet returned as messages: 0 means the next ReadMsg will wait for the
// network.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// ReadMsg reads the next frame.
//
// The returned Message points into the Reader: it, and every slice it holds
// (Data, Sums), is valid only until the next call to ReadMsg, which may
// overwrite it. Use Clone to keep a message or pass it to another goroutine.
//
// At a frame boundary, the end of the stream is io.EOF itself. A stream that
// ends inside a frame gives an error wrapping both ErrTruncated and
// io.ErrUnexpectedEOF. Any error is sticky: later calls return it again, as
// the stream can no longer be trusted to be at a frame boundary.
func (r *Reader) ReadMsg() (Message, error) {
	if r.err != nil {
		return nil, r.err
	}
	m, err := r.read()
	if err != nil {
		r.err = err
		return nil, err
	}
	return m, nil
}

func (r *Reader) read() (Message, error) {
	if n, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, readErr("header", n, HeaderSize, err)
	}
	h, err := parseHeader(r.hdr[:])
	if err != nil {
		return nil, err
	}
	if r.limit > 0 && h.length > r.limit {
		return nil, fmt.Errorf("wire: %v body of %d bytes, limit %d here: %w", h.typ, h.length, r.limit, ErrTooLarge)
	}
	body, err := r.readBody(h.length)
	if err != nil {
		return nil, readErr(h.typ.String()+" body", len(body), h.length, err)
	}
	if err := checkCRC(h, r.hdr[:], body); err != nil {
		return nil, err
	}
	m := r.msgs.get(h.typ)
	if m == nil {
		return nil, fmt.Errorf("wire: type %d: %w", uint8(h.typ), ErrUnknownType)
	}
	if err := decodeBody(m, h, body, &r.codec); err != nil {
		return nil, err
	}
	return m, nil
}

// minGrow is the first step by which readBody grows the body buffer.
const minGrow = 64 << 10

// readBody reads an n-byte body (n <= MaxBody) into r.body. When the buffer
// is too small it grows with the bytes actually received, doubling at most,
// so that a header alone (a broken or hostile peer announcing MaxBody and
// sending nothing) cannot make the Reader allocate MaxBody. On error it
// returns the bytes read so far.
func (r *Reader) readBody(n int) ([]byte, error) {
	if n <= cap(r.body) {
		b := r.body[:n]
		k, err := io.ReadFull(r.br, b)
		return b[:k], err
	}
	b := r.body[:0]
	for len(b) < n {
		step := min(n-len(b), max(len(b), minGrow))
		if cap(b)-len(b) < step {
			nb := make([]byte, len(b), len(b)+step)
			copy(nb, b)
			b = nb
			r.body = nb
		}
		k, err := io.ReadFull(r.br, b[len(b):len(b)+step])
		b = b[:len(b)+k]
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

// readErr wraps a failed io.ReadFull of want bytes that got n.
func readErr(what string, n, want int, err error) error {
	if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("wire: read %s: %d of %d bytes: %w (%w)", what, n, want, ErrTruncated, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("wire: read %s: %w", what, err)
}

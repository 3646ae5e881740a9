package nbdclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"net"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// ExportInfo is what the handshake learned about the export.
type ExportInfo struct {
	Name        string // the name asked for
	Description string // NBD_INFO_DESCRIPTION, when the server sent one
	Size        int64
	Flags       Flags
	// Block size constraints (NBD_INFO_BLOCK_SIZE); zero when the server did
	// not send them.
	MinBlockSize, PreferredBlockSize, MaxBlockSize uint32
}

// handshake runs the fixed newstyle negotiation on rw and returns the export
// the transmission phase will serve. It tries NBD_OPT_GO and falls back to
// NBD_OPT_EXPORT_NAME when the server answers NBD_REP_ERR_UNSUP.
//
// With opts.TLS it first upgrades the connection (NBD_OPT_STARTTLS) and
// returns the TLS connection and a reader on it, which the transmission
// phase must use.
func handshake(conn net.Conn, br *bufio.Reader, opts Options) (net.Conn, *bufio.Reader, ExportInfo, error) {
	var hello protocol.NegotiationNewstyleHeader
	if err := binary.Read(br, binary.BigEndian, &hello); err != nil {
		return nil, nil, ExportInfo{}, fmt.Errorf("nbdclient: read greeting: %w", err)
	}
	if hello.OldstyleMagic != protocol.NEGOTIATION_MAGIC_OLDSTYLE || hello.OptionMagic != protocol.NEGOTIATION_MAGIC_OPTION {
		return nil, nil, ExportInfo{}, fmt.Errorf("%w: greeting magic %#x %#x (oldstyle servers are not supported)", ErrProtocol, hello.OldstyleMagic, hello.OptionMagic)
	}
	if hello.HandshakeFlags&protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE == 0 {
		return nil, nil, ExportInfo{}, fmt.Errorf("%w: server is not fixed newstyle", ErrUnsupported)
	}
	clientFlags := nbdproto.FlagCFixedNewstyle
	noZeroes := hello.HandshakeFlags&nbdproto.FlagNoZeroes != 0
	if noZeroes {
		clientFlags |= nbdproto.FlagCNoZeroes
	}
	if err := binary.Write(conn, binary.BigEndian, clientFlags); err != nil {
		return nil, nil, ExportInfo{}, fmt.Errorf("nbdclient: send client flags: %w", err)
	}
	if opts.TLS != nil {
		tc, err := startTLS(conn, br, opts.TLS)
		if err != nil {
			return nil, nil, ExportInfo{}, err
		}
		conn, br = tc, bufio.NewReaderSize(tc, 64<<10)
	}

	info := ExportInfo{Name: opts.ExportName}
	err := optGo(conn, br, opts, &info)
	if err == nil || !isUnsupported(err) {
		return conn, br, info, err
	}
	return conn, br, info, optExport(conn, br, noZeroes, &info)
}

// startTLS sends NBD_OPT_STARTTLS and, once the server acknowledged it, runs
// the TLS handshake on conn (the spec's "TLS support" section).
func startTLS(conn net.Conn, br *bufio.Reader, cfg *tls.Config) (*tls.Conn, error) {
	if err := sendOption(conn, nbdproto.OptStartTLS, nil); err != nil {
		return nil, err
	}
	typ, body, err := readOptionReply(br, nbdproto.OptStartTLS)
	if err != nil {
		return nil, err
	}
	if typ != protocol.NEGOTIATION_TYPE_REPLY_ACK {
		return nil, fmt.Errorf("%w: NBD_OPT_STARTTLS: reply %#x: %s", ErrOptionRefused, typ, body)
	}
	if br.Buffered() > 0 {
		return nil, fmt.Errorf("%w: bytes after NBD_OPT_STARTTLS's acknowledgement", ErrProtocol)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("nbdclient: TLS handshake: %w", err)
	}
	return tc, nil
}

type unsupportedReply struct{ msg string }

func (e *unsupportedReply) Error() string {
	return fmt.Sprintf("%v: NBD_OPT_GO: NBD_REP_ERR_UNSUP: %s", ErrOptionRefused, e.msg)
}
func (e *unsupportedReply) Unwrap() error { return ErrOptionRefused }

func isUnsupported(err error) bool {
	_, ok := err.(*unsupportedReply)
	return ok
}

// optGo sends NBD_OPT_GO asking for the description and the block sizes, and
// reads replies up to NBD_REP_ACK.
func optGo(conn net.Conn, br *bufio.Reader, opts Options, info *ExportInfo) error {
	name := []byte(opts.ExportName)
	reqs := []uint16{protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION}
	if opts.BlockSizes {
		reqs = append(reqs, protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)
	}
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, uint16(len(reqs)))
	for _, r := range reqs {
		data = binary.BigEndian.AppendUint16(data, r)
	}
	if err := sendOption(conn, protocol.NEGOTIATION_ID_OPTION_GO, data); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, body, err := readOptionReply(br, protocol.NEGOTIATION_ID_OPTION_GO)
		if err != nil {
			return err
		}
		switch {
		case typ == protocol.NEGOTIATION_TYPE_REPLY_ACK:
			if !gotExport {
				return fmt.Errorf("%w: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT", ErrProtocol)
			}
			return nil
		case typ == protocol.NEGOTIATION_TYPE_REPLY_INFO:
			if err := parseInfo(body, info, &gotExport); err != nil {
				return err
			}
		case typ == protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED:
			return &unsupportedReply{msg: string(body)}
		case typ == protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN:
			return fmt.Errorf("%w %q: %s", ErrUnknownExport, opts.ExportName, body)
		case typ&(1<<31) != 0:
			return fmt.Errorf("%w: NBD_OPT_GO: reply %#x: %s", ErrOptionRefused, typ, body)
		default:
			// Replies of types this client does not know are ignored, as the
			// spec asks of clients.
		}
	}
}

func parseInfo(body []byte, info *ExportInfo, gotExport *bool) error {
	if len(body) < 2 {
		return fmt.Errorf("%w: NBD_REP_INFO of %d bytes", ErrProtocol, len(body))
	}
	typ, rest := binary.BigEndian.Uint16(body), body[2:]
	switch typ {
	case protocol.NEGOTIATION_TYPE_INFO_EXPORT:
		if len(rest) != 10 {
			return fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes", ErrProtocol, len(body))
		}
		info.Size = int64(binary.BigEndian.Uint64(rest))
		info.Flags = Flags(binary.BigEndian.Uint16(rest[8:]))
		*gotExport = true
	case protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE:
		if len(rest) != 12 {
			return fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes", ErrProtocol, len(body))
		}
		info.MinBlockSize = binary.BigEndian.Uint32(rest)
		info.PreferredBlockSize = binary.BigEndian.Uint32(rest[4:])
		info.MaxBlockSize = binary.BigEndian.Uint32(rest[8:])
	case protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION:
		info.Description = string(rest)
	}
	return nil
}

// optExport is the old way in: NBD_OPT_EXPORT_NAME, answered with the size and
// flags directly (or by closing the connection for an unknown name).
func optExport(conn net.Conn, br *bufio.Reader, noZeroes bool, info *ExportInfo) error {
	if err := sendOption(conn, nbdproto.OptExportName, []byte(info.Name)); err != nil {
		return err
	}
	var ans struct {
		Size  uint64
		Flags uint16
	}
	if err := binary.Read(br, binary.BigEndian, &ans); err != nil {
		return fmt.Errorf("%w %q: NBD_OPT_EXPORT_NAME: %w", ErrUnknownExport, info.Name, err)
	}
	info.Size, info.Flags = int64(ans.Size), Flags(ans.Flags)
	if !noZeroes {
		if _, err := br.Discard(nbdproto.ExportNameZeroes); err != nil {
			return fmt.Errorf("nbdclient: NBD_OPT_EXPORT_NAME padding: %w", err)
		}
	}
	return nil
}

func sendOption(w io.Writer, id uint32, data []byte) error {
	buf := binary.BigEndian.AppendUint64(make([]byte, 0, 16+len(data)), protocol.NEGOTIATION_MAGIC_OPTION)
	buf = binary.BigEndian.AppendUint32(buf, id)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(data)))
	buf = append(buf, data...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("nbdclient: send option %d: %w", id, err)
	}
	return nil
}

// readOptionReply reads one option reply to option id and returns its type
// and data.
func readOptionReply(r io.Reader, id uint32) (uint32, []byte, error) {
	var h protocol.NegotiationReplyHeader
	if err := binary.Read(r, binary.BigEndian, &h); err != nil {
		return 0, nil, fmt.Errorf("nbdclient: read option reply: %w", err)
	}
	if h.ReplyMagic != protocol.NEGOTIATION_MAGIC_REPLY || h.ID != id {
		return 0, nil, fmt.Errorf("%w: option reply magic %#x for option %d, want option %d", ErrProtocol, h.ReplyMagic, h.ID, id)
	}
	if h.Length > maxOptionReplyBytes {
		return 0, nil, fmt.Errorf("%w: option reply of %d bytes", ErrProtocol, h.Length)
	}
	body := make([]byte, h.Length)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("nbdclient: read option reply data: %w", err)
	}
	return h.Type, body, nil
}

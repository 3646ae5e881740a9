package blockdev

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/grbd/grbd/internal/nbdproto"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Fixed newstyle handshake (part of the NBD protocol: do not change):
//
//	S: "NBDMAGIC" "IHAVEOPT" u16 handshake flags (FIXED_NEWSTYLE|NO_ZEROES)
//	C: u32 client flags
//	repeat:
//	  C: "IHAVEOPT" u32 option u32 length, length bytes of data
//	  S: u64 0x3e889045565a9 u32 option u32 reply type u32 length, data
//	     (NBD_OPT_EXPORT_NAME instead gets u64 size, u16 flags, [124 zeroes])
//	until NBD_OPT_GO succeeds, NBD_OPT_EXPORT_NAME, or NBD_OPT_ABORT.

// errAborted: the client ended the handshake with NBD_OPT_ABORT.
var errAborted = errors.New("blockdev: client aborted negotiation")

// negotiate runs the handshake on c and returns the export to serve.
func (c *conn) negotiate() (export, error) {
	noZeroes, err := c.greet()
	if err != nil {
		return export{}, err
	}
	for i := 0; ; i++ {
		if i == maxOptions {
			return export{}, fmt.Errorf("%w: more than %d", ErrTooManyOptions, maxOptions)
		}
		id, data, err := c.readOption()
		if err != nil {
			return export{}, err
		}
		if served, err := c.refuseBeforeTLS(id); served || err != nil {
			if err != nil {
				return export{}, err
			}
			continue
		}
		x, done, err := c.option(id, data, noZeroes)
		if err != nil || done {
			return x, err
		}
	}
}

// greet sends the newstyle greeting and reads the client's flags;
// noZeroes: the client asked for no zero padding after the export.
func (c *conn) greet() (noZeroes bool, err error) {
	greeting := protocol.NegotiationNewstyleHeader{
		OldstyleMagic:  protocol.NEGOTIATION_MAGIC_OLDSTYLE,
		OptionMagic:    protocol.NEGOTIATION_MAGIC_OPTION,
		HandshakeFlags: protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE | nbdproto.FlagNoZeroes,
	}
	if err := c.send(greeting); err != nil {
		return false, err
	}
	var clientFlags uint32
	if err := binary.Read(c.br, binary.BigEndian, &clientFlags); err != nil {
		return false, fmt.Errorf("blockdev: read client flags: %w", err)
	}
	if clientFlags&^clientFlagsKnown != 0 {
		return false, fmt.Errorf("%w: %#x", ErrBadClientFlags, clientFlags)
	}
	return clientFlags&nbdproto.FlagCNoZeroes != 0, nil
}

// readOption reads one option: its id and data (at most maxOptionLength).
func (c *conn) readOption() (uint32, []byte, error) {
	var oh protocol.NegotiationOptionHeader
	if err := binary.Read(c.br, binary.BigEndian, &oh); err != nil {
		return 0, nil, fmt.Errorf("blockdev: read option header: %w", err)
	}
	if oh.OptionMagic != protocol.NEGOTIATION_MAGIC_OPTION {
		return 0, nil, fmt.Errorf("%w: %#x", ErrBadOptionMagic, oh.OptionMagic)
	}
	if oh.Length > maxOptionLength {
		return 0, nil, fmt.Errorf("%w: option %d with %d bytes", ErrOptionTooLarge, oh.ID, oh.Length)
	}
	data := make([]byte, oh.Length)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, fmt.Errorf("blockdev: read option %d data: %w", oh.ID, err)
	}
	return oh.ID, data, nil
}

// refuseBeforeTLS enforces FORCEDTLS: before STARTTLS only STARTTLS and
// ABORT are served; served: the option was answered with an error here.
func (c *conn) refuseBeforeTLS(id uint32) (served bool, err error) {
	if !c.srv.opts.TLSRequired || c.tls {
		return false, nil
	}
	switch id {
	case nbdproto.OptStartTLS, protocol.NEGOTIATION_ID_OPTION_ABORT:
		return false, nil
	case nbdproto.OptExportName:
		return false, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS", ErrTLSRequired)
	default:
		return true, c.sendReply(id, nbdproto.RepErrTLSReqd, []byte("TLS is required: send NBD_OPT_STARTTLS first"))
	}
}

// option serves one option; done: negotiation is over and x is the export
// chosen.
func (c *conn) option(id uint32, data []byte, noZeroes bool) (x export, done bool, err error) {
	switch id {
	case nbdproto.OptStartTLS:
		return export{}, false, c.startTLS(id, data)
	case nbdproto.OptExportName:
		if !c.srv.knownExport(data) {
			return export{}, false, fmt.Errorf("%w: %q", ErrUnknownExport, data)
		}
		x := c.srv.export(false)
		if err := c.sendExportName(x, noZeroes); err != nil {
			return export{}, false, err
		}
		return x, true, nil
	case protocol.NEGOTIATION_ID_OPTION_ABORT:
		// Best effort: the client may already have closed.
		_ = c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil)
		return export{}, false, errAborted
	case protocol.NEGOTIATION_ID_OPTION_LIST:
		return export{}, false, c.optList(id, data)
	case protocol.NEGOTIATION_ID_OPTION_INFO, protocol.NEGOTIATION_ID_OPTION_GO:
		x, ok, err := c.optInfo(id, data)
		if err != nil {
			return export{}, false, err
		}
		return x, ok && id == protocol.NEGOTIATION_ID_OPTION_GO, nil
	default:
		// NBD_OPT_STRUCTURED_REPLY, meta contexts, extended headers
		// and anything unknown: simple replies only.
		return export{}, false, c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED, []byte("option not supported"))
	}
}

// startTLS answers NBD_OPT_STARTTLS: without Options.TLS the option is
// unsupported (NOTLS mode); a second one, or one with data, is invalid;
// otherwise the server acknowledges it and the TLS handshake follows at once
// (under the handshake deadline), after which negotiation goes on inside
// TLS with fresh buffers.
func (c *conn) startTLS(id uint32, data []byte) error {
	cfg := c.srv.opts.TLS
	switch {
	case cfg == nil:
		return c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED, []byte("TLS is not configured"))
	case c.tls:
		return c.sendReply(id, nbdproto.RepErrInvalid, []byte("TLS is already negotiated"))
	case len(data) != 0:
		return c.sendReply(id, nbdproto.RepErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	case c.br.Buffered() != 0:
		// The client must wait for our reply; bytes after the option would
		// be read in plain text and could not be part of the TLS stream.
		return fmt.Errorf("%w: %d bytes sent after NBD_OPT_STARTTLS", ErrTLS, c.br.Buffered())
	}
	if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil); err != nil {
		return err
	}
	tc := tls.Server(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("%w: %w", ErrTLS, err)
	}
	c.mu.Lock()
	c.nc = tc
	c.mu.Unlock()
	c.br = bufio.NewReaderSize(tc, handshakeBufferSize)
	c.bw = bufio.NewWriterSize(tc, handshakeBufferSize)
	c.tls = true
	c.srv.stats.tlsConns.Add(1)
	return nil
}

func (c *conn) optList(id uint32, data []byte) error {
	if len(data) != 0 {
		return c.sendReply(id, nbdproto.RepErrInvalid, []byte("NBD_OPT_LIST takes no data"))
	}
	name := c.srv.opts.ExportName
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(name)), uint32(len(name)))
	b = append(b, name...)
	if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_SERVER, b); err != nil {
		return err
	}
	return c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil)
}

// optInfo answers NBD_OPT_INFO or NBD_OPT_GO. ok reports success, in which
// case x is the export to serve if the option was GO.
func (c *conn) optInfo(id uint32, data []byte) (x export, ok bool, err error) {
	name, infos, valid := parseInfoRequest(data)
	if !valid {
		return x, false, c.sendReply(id, nbdproto.RepErrInvalid, []byte("malformed NBD_OPT_INFO/GO data"))
	}
	if !c.srv.knownExport(name) {
		return x, false, c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN, []byte("unknown export"))
	}
	var wantName, wantDesc, wantBlock bool
	for _, t := range infos {
		switch t {
		case protocol.NEGOTIATION_TYPE_INFO_NAME:
			wantName = true
		case protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION:
			wantDesc = true
		case protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE:
			wantBlock = true
		}
	}
	x = c.srv.export(wantBlock && id == protocol.NEGOTIATION_ID_OPTION_GO)
	o := &c.srv.opts

	info := binary.BigEndian.AppendUint16(nil, protocol.NEGOTIATION_TYPE_INFO_EXPORT)
	info = binary.BigEndian.AppendUint64(info, uint64(x.size))
	info = binary.BigEndian.AppendUint16(info, uint16(x.flags))
	if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_INFO, info); err != nil {
		return x, false, err
	}
	if wantName {
		b := binary.BigEndian.AppendUint16(nil, protocol.NEGOTIATION_TYPE_INFO_NAME)
		if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_INFO, append(b, o.ExportName...)); err != nil {
			return x, false, err
		}
	}
	if wantDesc && o.Description != "" {
		b := binary.BigEndian.AppendUint16(nil, protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION)
		if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_INFO, append(b, o.Description...)); err != nil {
			return x, false, err
		}
	}
	// Block sizes are always sent (the spec allows unrequested info) but
	// alignment is only enforced when the client asked for them in GO.
	b := binary.BigEndian.AppendUint16(nil, protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)
	b = binary.BigEndian.AppendUint32(b, o.MinBlockSize)
	b = binary.BigEndian.AppendUint32(b, o.PreferredBlockSize)
	b = binary.BigEndian.AppendUint32(b, o.MaxBlockSize)
	if err := c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_INFO, b); err != nil {
		return x, false, err
	}
	return x, true, c.sendReply(id, protocol.NEGOTIATION_TYPE_REPLY_ACK, nil)
}

// parseInfoRequest decodes NBD_OPT_INFO/GO data:
//
//	u32 name length, name, u16 n, n x u16 info type
//
// valid is false unless the lengths add up exactly and the name is a legal
// NBD string length.
func parseInfoRequest(data []byte) (name []byte, infos []uint16, valid bool) {
	if len(data) < 6 {
		return nil, nil, false
	}
	nl := binary.BigEndian.Uint32(data)
	if nl > nbdproto.MaxStringLength || uint64(nl) > uint64(len(data)-6) {
		return nil, nil, false
	}
	name = data[4 : 4+nl]
	rest := data[4+nl:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return nil, nil, false
	}
	infos = make([]uint16, n)
	for i := range infos {
		infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, infos, true
}

// sendExportName answers a successful NBD_OPT_EXPORT_NAME.
func (c *conn) sendExportName(x export, noZeroes bool) error {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 10+nbdproto.ExportNameZeroes), uint64(x.size))
	b = binary.BigEndian.AppendUint16(b, uint16(x.flags))
	if !noZeroes {
		b = append(b, make([]byte, nbdproto.ExportNameZeroes)...)
	}
	if _, err := c.bw.Write(b); err != nil {
		return fmt.Errorf("blockdev: send export info: %w", err)
	}
	return c.flush()
}

// sendReply sends one option reply; final replies (ACK, errors) are flushed.
func (c *conn) sendReply(opt, typ uint32, data []byte) error {
	h := protocol.NegotiationReplyHeader{
		ReplyMagic: protocol.NEGOTIATION_MAGIC_REPLY,
		ID:         opt,
		Type:       typ,
		Length:     uint32(len(data)),
	}
	if err := binary.Write(c.bw, binary.BigEndian, h); err != nil {
		return fmt.Errorf("blockdev: send option reply: %w", err)
	}
	if _, err := c.bw.Write(data); err != nil {
		return fmt.Errorf("blockdev: send option reply: %w", err)
	}
	if typ == protocol.NEGOTIATION_TYPE_REPLY_INFO || typ == protocol.NEGOTIATION_TYPE_REPLY_SERVER {
		return nil // more replies follow
	}
	return c.flush()
}

func (c *conn) send(v any) error {
	if err := binary.Write(c.bw, binary.BigEndian, v); err != nil {
		return fmt.Errorf("blockdev: send handshake: %w", err)
	}
	return c.flush()
}

func (c *conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("blockdev: send handshake: %w", err)
	}
	return nil
}

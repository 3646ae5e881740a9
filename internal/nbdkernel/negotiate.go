package nbdkernel

import (
	"encoding/binary"
	"fmt"
	"github.com/grbd/grbd/internal/nbdproto"
	"io"
	"math/bits"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// kernelKnown are the flags the kernel's NBD client acts on; the others
// are dropped rather than handed to a kernel that may reject them.
const kernelKnown = nbdproto.FlagHasFlags | nbdproto.FlagReadOnly | nbdproto.FlagSendFlush | nbdproto.FlagSendFUA | nbdproto.FlagRotational |
	nbdproto.FlagSendTrim | nbdproto.FlagSendWriteZeroes | nbdproto.FlagCanMultiConn

// KernelFlags is the NBD_SET_FLAGS argument for an export that advertised
// server: what it supports (FLUSH, FUA, TRIM, WRITE_ZEROES, read-only),
// always with HAS_FLAGS, so that the kernel sends those commands.
func KernelFlags(server nbdproto.Flags) uint64 {
	return uint64(server&kernelKnown | nbdproto.FlagHasFlags)
}

// maxReply bounds an option reply read in the handshake.
const maxReply = 1 << 16

// Export is what the server said about the export in the handshake.
type Export struct {
	Size  uint64
	Flags nbdproto.Flags // transmission flags
	// Block sizes (NBD_INFO_BLOCK_SIZE); zero when not sent.
	MinBlock, PreferredBlock, MaxBlock uint32
}

// Negotiate runs the fixed-newstyle handshake with NBD_OPT_GO for export
// name on rw and returns the export; rw is then in the transmission phase,
// ready for the kernel.
func Negotiate(rw io.ReadWriter, name string) (Export, error) {
	var hdr protocol.NegotiationNewstyleHeader
	if err := binary.Read(rw, binary.BigEndian, &hdr); err != nil {
		return Export{}, fmt.Errorf("%w: read greeting: %w", ErrNegotiate, err)
	}
	if hdr.OldstyleMagic != protocol.NEGOTIATION_MAGIC_OLDSTYLE || hdr.OptionMagic != protocol.NEGOTIATION_MAGIC_OPTION {
		return Export{}, fmt.Errorf("%w: not a newstyle NBD server", ErrNegotiate)
	}
	if hdr.HandshakeFlags&protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE == 0 {
		return Export{}, fmt.Errorf("%w: server does not speak fixed newstyle", ErrNegotiate)
	}
	cflags := nbdproto.FlagCFixedNewstyle
	if hdr.HandshakeFlags&nbdproto.FlagNoZeroes != 0 {
		cflags |= nbdproto.FlagCNoZeroes
	}
	// Client flags, then NBD_OPT_GO{name, [NBD_INFO_BLOCK_SIZE]}.
	msg := binary.BigEndian.AppendUint32(nil, cflags)
	msg = binary.BigEndian.AppendUint64(msg, protocol.NEGOTIATION_MAGIC_OPTION)
	msg = binary.BigEndian.AppendUint32(msg, protocol.NEGOTIATION_ID_OPTION_GO)
	msg = binary.BigEndian.AppendUint32(msg, uint32(4+len(name)+2+2))
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(name)))
	msg = append(msg, name...)
	msg = binary.BigEndian.AppendUint16(msg, 1)
	msg = binary.BigEndian.AppendUint16(msg, protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)
	if _, err := rw.Write(msg); err != nil {
		return Export{}, fmt.Errorf("%w: send NBD_OPT_GO: %w", ErrNegotiate, err)
	}
	var x Export
	haveExport := false
	for {
		var rh protocol.NegotiationReplyHeader
		if err := binary.Read(rw, binary.BigEndian, &rh); err != nil {
			return Export{}, fmt.Errorf("%w: read reply: %w", ErrNegotiate, err)
		}
		if rh.ReplyMagic != protocol.NEGOTIATION_MAGIC_REPLY || rh.ID != protocol.NEGOTIATION_ID_OPTION_GO || rh.Length > maxReply {
			return Export{}, fmt.Errorf("%w: bad option reply (magic %#x, option %d, %d bytes)", ErrNegotiate, rh.ReplyMagic, rh.ID, rh.Length)
		}
		data := make([]byte, rh.Length)
		if _, err := io.ReadFull(rw, data); err != nil {
			return Export{}, fmt.Errorf("%w: read reply data: %w", ErrNegotiate, err)
		}
		switch {
		case rh.Type == protocol.NEGOTIATION_TYPE_REPLY_ACK:
			if !haveExport {
				return Export{}, fmt.Errorf("%w: server sent no export information", ErrNegotiate)
			}
			return x, nil
		case rh.Type == protocol.NEGOTIATION_TYPE_REPLY_INFO:
			if len(data) < 2 {
				return Export{}, fmt.Errorf("%w: short info reply", ErrNegotiate)
			}
			switch binary.BigEndian.Uint16(data) {
			case protocol.NEGOTIATION_TYPE_INFO_EXPORT:
				if len(data) != 12 {
					return Export{}, fmt.Errorf("%w: export info of %d bytes", ErrNegotiate, len(data))
				}
				x.Size, x.Flags, haveExport = binary.BigEndian.Uint64(data[2:]), nbdproto.Flags(binary.BigEndian.Uint16(data[10:])), true
			case protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE:
				if len(data) != 14 {
					return Export{}, fmt.Errorf("%w: block size info of %d bytes", ErrNegotiate, len(data))
				}
				x.MinBlock = binary.BigEndian.Uint32(data[2:])
				x.PreferredBlock = binary.BigEndian.Uint32(data[6:])
				x.MaxBlock = binary.BigEndian.Uint32(data[10:])
			}
		case rh.Type&(1<<31) != 0:
			return Export{}, fmt.Errorf("%w: server refused export %q: error %#x: %s", ErrNegotiate, name, rh.Type, data)
		}
	}
}

// Kernel block sizes: the NBD driver takes 512 bytes to a page.
const (
	minKernelBlock = 512
	maxKernelBlock = 4096
)

// ChooseBlockSize picks the device's logical block size: the server's
// preferred size within what the kernel accepts, never below the server's
// minimum (I/O smaller than that would be refused).
func ChooseBlockSize(x Export) (uint32, error) {
	bs := uint32(maxKernelBlock)
	if x.PreferredBlock != 0 {
		bs = min(max(x.PreferredBlock, minKernelBlock), maxKernelBlock)
	}
	bs = max(bs, x.MinBlock)
	switch {
	case bs > maxKernelBlock:
		return 0, fmt.Errorf("%w: server needs %d-byte blocks, the kernel takes at most %d", ErrNegotiate, x.MinBlock, maxKernelBlock)
	case bits.OnesCount32(bs) != 1:
		return 0, fmt.Errorf("%w: block size %d is not a power of two", ErrNegotiate, bs)
	case x.Size%uint64(bs) != 0:
		return 0, fmt.Errorf("%w: export size %d is not a multiple of the block size %d", ErrNegotiate, x.Size, bs)
	}
	return bs, nil
}

/// TCP Fast Open (RFC 7413): a SYN that carries data, and the option (a cookie, or a request
/// for one) that lets a server take that data before the handshake is done.
public enum FastOpen {
    public static let optionKind: UInt8 = 34
    /// The experimental encoding (RFC 6994: kind 254 followed by the magic 0xF989), which
    /// Linux still reads.
    public static let experimentalKind: UInt8 = 254
    public static let experimentalMagic: UInt16 = 0xF989
}

extension TCPPacket {
    /// The SYN made, in place, into one that uses no Fast Open: its Fast Open options
    /// overwritten with NOPs (the header keeps its length) and the data it carries cut off;
    /// the IP length, the IPv4 header checksum and a complete TCP checksum written again.
    /// Returns the packet's new length, or nil when nothing changed: it used no Fast Open, is
    /// not a SYN (a SYN-ACK's cookie is left alone), or came with a wrong checksum (`partial`:
    /// the field holds only the pseudo-header sum, as a local sender's does), which a complete
    /// new one would hide from the server that must drop it.
    ///
    /// A server that sees no cookie acknowledges the SYN alone, and a Fast Open client then
    /// sends the data again at once, after the handshake (RFC 7413 section 4.2.2), as it does
    /// facing any server without Fast Open.
    public func removingFastOpen(partial: Bool) -> Int? {
        guard tcp.flags.contains(.syn) && !tcp.flags.contains(.ack) else { return nil }
        let opts = tcp.optionBytes
        func isFastOpen(_ o: TCPOption) -> Bool {
            o.kind == FastOpen.optionKind
                || (o.kind == FastOpen.experimentalKind && o.length >= 4 && opts.be16(o.offset + 2) == FastOpen.experimentalMagic)
        }
        let cut = tcp.payloadLength
        guard cut > 0 || tcp.options.contains(where: isFastOpen) else { return nil }
        guard partial || checksumIsValid else { return nil }
        for o in tcp.options where isFastOpen(o) {
            for i in o.offset..<(o.offset + o.length) { opts.setU8(i, TCPOptionKind.noOperation) }
        }
        let whole = bytes
        let newLength = whole.count - cut
        switch ip {
        case .v4(let h):
            if cut > 0 {
                h.checksum = Checksum.update(h.checksum, old: UInt16(whole.count), new: UInt16(newLength))
                whole.setBE16(IPv4Header.Field.totalLength, UInt16(newLength))
            }
        case .v6(let h):
            if cut > 0 { whole.setBE16(IPv6Header.Field.payloadLength, UInt16(h.payloadLength - cut)) }
        }
        guard let shorter = TCPPacket(whole.slice(0, newLength)) else { return nil }
        shorter.fillChecksum()
        return newLength
    }
}

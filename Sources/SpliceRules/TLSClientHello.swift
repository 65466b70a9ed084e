/// What the proxy reads of a TLS ClientHello.
public struct TLSClientHello: Sendable, Equatable {
    /// The ClientHello's legacy_version (0x0303 for TLS 1.2 and 1.3).
    public var legacyVersion: UInt16
    /// The server_name extension's host_name, lowercased; nil when there is none.
    public var serverName: String?
    /// The protocols the ALPN extension offers ("h2", "http/1.1"), in order; empty when none.
    public var alpnProtocols: [String]

    public init(legacyVersion: UInt16 = 0x0303, serverName: String? = nil, alpnProtocols: [String] = []) {
        self.legacyVersion = legacyVersion
        self.serverName = serverName
        self.alpnProtocols = alpnProtocols
    }

    /// Parses the ClientHello at the start of a TLS stream: handshake records (content type 22,
    /// major version 3, 1...16384 bytes each) whose fragments, put together, hold a handshake
    /// message of type 1 (ClientHello). The message may span several records. Its body is
    /// walked in full: legacy_version, random, legacy_session_id (at most 32 bytes),
    /// cipher_suites (a non-empty even length), legacy_compression_methods (non-empty) and,
    /// when present, the extensions, which must fill the rest exactly.
    ///
    /// `.invalid` as soon as a record header or the handshake type is wrong, when any length
    /// does not fit, when a server name is not printable ASCII, and when the records holding
    /// the message would need more than 16384 bytes.
    public static func parse(_ bytes: some Collection<UInt8>) -> Peek<TLSClientHello> {
        let b = Array(bytes.prefix(maxPeekLength))
        var message: [UInt8] = []
        var record = 0
        while true {
            // Record header: type 22 (handshake), version 3.x, a 16-bit length.
            if record < b.count && b[record] != 22 { return .invalid }
            if record + 1 < b.count && b[record + 1] != 3 { return .invalid }
            guard record + 5 <= b.count else { return b.count < maxPeekLength ? .incomplete : .invalid }
            let length = Int(b[record + 3]) << 8 | Int(b[record + 4])
            guard length >= 1 && length <= 16384 else { return .invalid }
            let fragmentEnd = min(record + 5 + length, b.count)
            message += b[(record + 5)..<fragmentEnd]

            // Handshake header: type 1 (ClientHello), a 24-bit length.
            if let type = message.first, type != 1 { return .invalid }
            if message.count >= 4 {
                let bodyLength = Int(message[1]) << 16 | Int(message[2]) << 8 | Int(message[3])
                // Even in one record, the message needs a record header and its own header.
                guard 5 + 4 + bodyLength <= maxPeekLength else { return .invalid }
                if message.count >= 4 + bodyLength {
                    return parseBody(message[4..<(4 + bodyLength)])
                }
            }
            record += 5 + length
            guard record <= b.count else { return b.count < maxPeekLength ? .incomplete : .invalid }
        }
    }

    /// Walks a whole ClientHello body.
    static func parseBody(_ body: ArraySlice<UInt8>) -> Peek<TLSClientHello> {
        var r = ByteReader(body)
        guard let version = r.u16(),
              r.skip(32),
              let sessionID = r.vector(lengthBytes: 1), sessionID.count <= 32,
              let suites = r.vector(lengthBytes: 2), suites.count >= 2, suites.count % 2 == 0,
              let compression = r.vector(lengthBytes: 1), !compression.isEmpty
        else { return .invalid }
        var hello = TLSClientHello(legacyVersion: UInt16(version))
        if r.atEnd { return .complete(hello) }

        guard let extensions = r.vector(lengthBytes: 2), r.atEnd else { return .invalid }
        var e = ByteReader(extensions)
        while !e.atEnd {
            guard let type = e.u16(), let data = e.vector(lengthBytes: 2) else { return .invalid }
            switch type {
            case 0:
                let sni = serverName(data)
                guard sni.valid else { return .invalid }
                if hello.serverName == nil { hello.serverName = sni.name }
            case 16:
                guard let protocols = alpn(data) else { return .invalid }
                hello.alpnProtocols = protocols
            default:
                break
            }
        }
        return .complete(hello)
    }

    /// The first host_name (name type 0) of a server_name extension, lowercased (nil when the
    /// list has none); not valid when the extension is malformed or a host name is not
    /// printable ASCII.
    static func serverName(_ data: ArraySlice<UInt8>) -> (valid: Bool, name: String?) {
        var d = ByteReader(data)
        guard let list = d.vector(lengthBytes: 2), !list.isEmpty, d.atEnd else { return (false, nil) }
        var l = ByteReader(list)
        var found: String?
        while !l.atEnd {
            guard let type = l.u8(), let name = l.vector(lengthBytes: 2) else { return (false, nil) }
            guard type == 0 else { continue }
            guard !name.isEmpty, name.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return (false, nil) }
            if found == nil { found = text(name).lowercased() }
        }
        return (true, found)
    }

    /// The protocol names of an ALPN extension; nil when it is malformed.
    static func alpn(_ data: ArraySlice<UInt8>) -> [String]? {
        var d = ByteReader(data)
        guard let list = d.vector(lengthBytes: 2), d.atEnd else { return nil }
        var l = ByteReader(list)
        var names: [String] = []
        while !l.atEnd {
            guard let name = l.vector(lengthBytes: 1), !name.isEmpty else { return nil }
            names.append(text(name))
        }
        return names
    }
}

/// Reads big-endian integers and length-prefixed vectors from a byte slice; every read checks
/// that the bytes are there and returns nil when they are not.
struct ByteReader {
    var rest: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { rest = bytes }

    var atEnd: Bool { rest.isEmpty }

    mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, n <= rest.count else { return nil }
        let taken = rest.prefix(n)
        rest = rest.dropFirst(n)
        return taken
    }

    mutating func skip(_ n: Int) -> Bool { take(n) != nil }

    mutating func u8() -> Int? { take(1).map { Int($0[$0.startIndex]) } }

    mutating func u16() -> Int? { take(2).map { Int($0[$0.startIndex]) << 8 | Int($0[$0.startIndex + 1]) } }

    /// A vector whose length comes first, in `lengthBytes` (1 or 2) bytes.
    mutating func vector(lengthBytes: Int) -> ArraySlice<UInt8>? {
        guard let n = lengthBytes == 1 ? u8() : u16() else { return nil }
        return take(n)
    }
}

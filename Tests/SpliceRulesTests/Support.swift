import SpliceRules
import TestSupport

/// Builds TLS handshake bytes field by field, as RFC 8446 section 4.1.2 lays a ClientHello out.
enum TLSBuilder {
    static func u16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    static func vector8(_ b: [UInt8]) -> [UInt8] { [UInt8(b.count)] + b }
    static func vector16(_ b: [UInt8]) -> [UInt8] { u16(b.count) + b }
    static func ext(_ type: Int, _ data: [UInt8]) -> [UInt8] { u16(type) + vector16(data) }

    static func serverNameExtension(_ name: String) -> [UInt8] {
        ext(0, vector16([0] + vector16(Array(name.utf8))))
    }

    static func alpnExtension(_ protocols: [String]) -> [UInt8] {
        ext(16, vector16(protocols.flatMap { vector8(Array($0.utf8)) }))
    }

    /// The extensions a current browser or curl sends besides server_name and ALPN.
    static var commonExtensions: [UInt8] {
        ext(10, vector16(u16(0x001d) + u16(0x0017) + u16(0x0018)))                // supported_groups
            + ext(11, vector8([0]))                                                   // ec_point_formats
            + ext(13, vector16(u16(0x0403) + u16(0x0804) + u16(0x0401)))            // signature_algorithms
            + ext(43, vector8(u16(0x0304) + u16(0x0303)))                           // supported_versions
            + ext(45, vector8([1]))                                                   // psk_key_exchange_modes
            + ext(51, vector16(u16(0x001d) + vector16([UInt8](repeating: 0x42, count: 32))))  // key_share
    }

    /// A ClientHello handshake message (type 1, 24-bit length, body).
    static func clientHello(sni: String?, alpn: [String] = ["h2", "http/1.1"], extra: [UInt8] = [],
                            withExtensions: Bool = true) -> [UInt8] {
        var body = u16(0x0303)                                           // legacy_version
        body += (0..<32).map { UInt8($0 * 7 & 0xff) }                    // random
        body += vector8([UInt8](repeating: 0xab, count: 32))             // legacy_session_id
        body += vector16(u16(0x1301) + u16(0x1302) + u16(0x1303) + u16(0xc02f) + u16(0x00ff))
        body += vector8([0])                                             // legacy_compression_methods
        if withExtensions {
            var extensions: [UInt8] = []
            if let sni { extensions += serverNameExtension(sni) }
            if !alpn.isEmpty { extensions += alpnExtension(alpn) }
            extensions += commonExtensions + extra
            body += vector16(extensions)
        }
        return [1, UInt8(body.count >> 16 & 0xff), UInt8(body.count >> 8 & 0xff), UInt8(body.count & 0xff)] + body
    }

    /// The message in handshake records, cut at the given offsets of the message.
    static func records(_ message: [UInt8], cutAt cuts: [Int] = []) -> [UInt8] {
        var out: [UInt8] = []
        var start = 0
        for end in cuts + [message.count] {
            let fragment = Array(message[start..<end])
            out += [22, 3, 1] + u16(fragment.count) + fragment
            start = end
        }
        return out
    }
}

extension Peek {
    var isIncomplete: Bool { if case .incomplete = self { return true } else { return false } }
    var isInvalid: Bool { if case .invalid = self { return true } else { return false } }
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

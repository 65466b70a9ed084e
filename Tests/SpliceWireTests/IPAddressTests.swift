import Testing
@testable import SpliceWire
import TestSupport

@Suite("IPAddress")
struct IPAddressTests {
    @Test("IPv4 dotted quads parse, are IPv4-mapped, and print back", arguments: [
        ("0.0.0.0", UInt32(0)),
        ("127.0.0.1", 0x7f00_0001),
        ("192.0.2.10", 0xc000_020a),
        ("255.255.255.255", 0xffff_ffff),
        ("10.1.2.3", 0x0a01_0203),
    ] as [(String, UInt32)])
    func ipv4(text: String, value: UInt32) throws {
        let a = try #require(IPAddress(text))
        #expect(a.isIPv4)
        #expect(a.ipv4Value == value)
        #expect(a == IPAddress(ipv4: value))
        #expect(a.high == 0)
        #expect(a.low == 0x0000_ffff_0000_0000 | UInt64(value))
        #expect(a.description == text)
    }

    @Test("IPv6 forms parse to the right bits and print in RFC 5952 form", arguments: [
        ("::", UInt64(0), UInt64(0), "::"),
        ("::1", 0, 1, "::1"),
        ("1::", 0x0001_0000_0000_0000, 0, "1::"),
        ("2001:db8::10", 0x2001_0db8_0000_0000, 0x10, "2001:db8::10"),
        ("2001:DB8:0:0:0:0:0:10", 0x2001_0db8_0000_0000, 0x10, "2001:db8::10"),
        ("2001:0db8:0000:0000:0000:0000:0000:0010", 0x2001_0db8_0000_0000, 0x10, "2001:db8::10"),
        ("fe80::1:2:3:4", 0xfe80_0000_0000_0000, 0x0001_0002_0003_0004, "fe80::1:2:3:4"),
        ("1:2:3:4:5:6:7:8", 0x0001_0002_0003_0004, 0x0005_0006_0007_0008, "1:2:3:4:5:6:7:8"),
        // One zero group is not shortened; the first of two equal runs is (RFC 5952 4.2).
        ("1:0:2:3:4:5:6:7", 0x0001_0000_0002_0003, 0x0004_0005_0006_0007, "1:0:2:3:4:5:6:7"),
        ("1:0:0:2:3:0:0:4", 0x0001_0000_0000_0002, 0x0003_0000_0000_0004, "1::2:3:0:0:4"),
        ("1:0:0:2:0:0:0:4", 0x0001_0000_0000_0002, 0x0000_0000_0000_0004, "1:0:0:2::4"),
        ("1:2:3:4:5:6:7::", 0x0001_0002_0003_0004, 0x0005_0006_0007_0000, "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", 0x0000_0002_0003_0004, 0x0005_0006_0007_0008, "0:2:3:4:5:6:7:8"),
        // Embedded IPv4 tails.
        ("::1.2.3.4", 0, 0x0102_0304, "::102:304"),
        ("64:ff9b::192.0.2.33", 0x0064_ff9b_0000_0000, 0xc000_0221, "64:ff9b::c000:221"),
        ("1:2:3:4:5:6:1.2.3.4", 0x0001_0002_0003_0004, 0x0005_0006_0102_0304, "1:2:3:4:5:6:102:304"),
    ] as [(String, UInt64, UInt64, String)])
    func ipv6(text: String, high: UInt64, low: UInt64, printed: String) throws {
        let a = try #require(IPAddress(text))
        #expect(a.high == high)
        #expect(a.low == low)
        #expect(!a.isIPv4)
        #expect(a.description == printed)
        #expect(IPAddress(a.description) == a)
    }

    @Test("an IPv4-mapped IPv6 address is the IPv4 address")
    func mapped() throws {
        let mapped = try #require(IPAddress("::ffff:192.0.2.1"))
        #expect(mapped == IPAddress("192.0.2.1"))
        #expect(mapped.isIPv4)
        #expect(mapped.description == "192.0.2.1")
        #expect(IPAddress("::ffff:c000:201") == mapped)
    }

    @Test("invalid text is rejected", arguments: [
        "", ".", ".1.2.3", "1.2.3.0x1", "0.0.0.256", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-1", "1..2.3", "1.2.3.4.", " 1.2.3.4", "1.2.3.4 ",
        "1.2.3.a", "1.2.3.1234", "+1.2.3.4", "1.+2.3.4", "01.2.3.4", "1.2.3.00", "١.٢.٣.٤",
        ":", ":::", "1:2", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "::1:2:3:4:5:6:7:8",
        "12345::", "g::", "::g", "1:2:3:4:5:6:7:8::", "1.2.3.4::", "::1.2.3", "::1.2.3.4:5",
        "::256.0.0.1", "fe80::1%eth0", "[::1]", "+1::", "::+1", "1:-1::", "１::", "1:2:3:4:5:6:7:1.2.3.4",
        ":1::", "1::2:",
    ])
    func invalid(text: String) {
        #expect(IPAddress(text) == nil, "\(text) should not parse")
    }

    @Test("Substring input parses too")
    func substring() {
        let line = "addr=10.0.0.1;"
        let part = line.dropFirst(5).dropLast()
        #expect(IPAddress(part) == IPAddress(ipv4: 0x0a00_0001))
    }

    @Test("random addresses print and parse back to themselves")
    func roundTrip() {
        var rng = SplitMix64(seed: testSeed(default: 0x1a_0001))
        for _ in 0..<5_000 {
            var a = IPAddress(high: rng.next(), low: rng.next())
            // Zero some groups so that "::" shows up in every position.
            for g in 0..<8 where rng.oneIn(3) {
                if g < 4 { a.high &= ~(0xffff << UInt64(16 * (3 - g))) } else { a.low &= ~(0xffff << UInt64(16 * (7 - g))) }
            }
            #expect(IPAddress(a.description) == a, "\(a)")
            let v4 = IPAddress(ipv4: rng.u32())
            #expect(IPAddress(v4.description) == v4)
        }
    }
}

import Testing
import SpliceWire
import SpliceEngine

/// The one validation of a policy that `spliced`, `splicectl` and the daemon's `set-policy`
/// share (SplicePolicy.parsePorts / parsePrefixes / init(validating:)).
@Suite("SplicePolicy validation")
struct SplicePolicyValidationTests {
    private func portsError(_ text: String) -> String? {
        do {
            _ = try SplicePolicy.parsePorts(text)
            return nil
        } catch {
            return error.description
        }
    }

    @Test("a list of ports parses, blanks around elements allowed")
    func goodPorts() throws {
        #expect(try SplicePolicy.parsePorts("80") == [80])
        #expect(try SplicePolicy.parsePorts("80,443") == [80, 443])
        #expect(try SplicePolicy.parsePorts(" 1 , 65535 ") == [1, 65535])
    }

    @Test("an empty list of ports is refused, not taken for 'any port'",
          arguments: ["", " ", ",", " , "])
    func emptyPortList(_ text: String) {
        let e = portsError(text)
        #expect(e != nil, "'\(text)' was accepted")
        #expect(e?.contains("empty") == true, "\(e ?? "")")
    }

    @Test("an empty element in a list of ports is refused", arguments: ["80,,443", "80,", ",80", "80, ,443"])
    func emptyPortElement(_ text: String) {
        let e = portsError(text)
        #expect(e?.contains("empty element") == true, "'\(text)': \(e ?? "accepted")")
    }

    @Test("port 0, ports past 65535 and negative ports are refused as out of range",
          arguments: ["0", "80,0", "65536", "70000", "99999999999999999999999", "-5", "80,-1"])
    func outOfRange(_ text: String) {
        let e = portsError(text)
        #expect(e?.contains("out of range") == true, "'\(text)': \(e ?? "accepted")")
    }

    @Test("what is not a number is refused and named", arguments: ["http", "80a", "8 0", "0x50", "+80", "-"])
    func notANumber(_ text: String) {
        let e = portsError(text)
        #expect(e != nil, "'\(text)' was accepted")
        #expect(e?.contains("not a port number") == true, "\(e ?? "")")
    }

    @Test("ranges A:B parse beside single ports; every port is 1:65535")
    func portRanges() throws {
        #expect(try SplicePolicy.parsePorts("80,8000:8999") == [80, PortRange(8000, 8999)])
        #expect(try SplicePolicy.parsePorts(" 1:65535 ") == [PortRange(1, 65535)])
        let every = PortSet(try SplicePolicy.parsePorts("1:65535"))
        #expect(every.contains(1) && every.contains(65535) && !every.contains(0) && every.ranges == [PortRange(1, 65535)])
        let some = PortSet(try SplicePolicy.parsePorts("443,80,81,82,1000:1002,1001"))
        #expect(some.ranges == [PortRange(80, 82), 443, PortRange(1000, 1002)])
        #expect(some.contains(81) && !some.contains(83) && !some.contains(999) && some.contains(1002))
        #expect(PortSet().ranges.isEmpty && !PortSet().contains(80))
        let p = try SplicePolicy(validating: true, ports: [PortRange(5000, 5010)], servers: [], clients: [])
        let any = IPAddress("10.0.0.1")!
        #expect(p.claims(client: any, server: any, serverPort: 5005) && !p.claims(client: any, server: any, serverPort: 5011))
    }

    @Test("a bad range is refused and named", arguments: [
        ("5:3", "below"), ("80:80", "below"), ("1:70000", "out of range"), ("0:80", "out of range"),
        ("a:b", "not a port range"), ("1:2:3", "not a port or a range"), (":80", "not a port range"),
        ("80:", "not a port range"), ("80-90", "not a port number"),
    ])
    func badRange(_ text: String, _ says: String) {
        let e = portsError(text)
        #expect(e?.contains(says) == true, "'\(text)': \(e ?? "accepted")")
    }

    @Test("prefixes: an empty string is any; bad prefixes and empty elements are refused")
    func prefixes() throws {
        #expect(try SplicePolicy.parsePrefixes("", what: "servers").isEmpty)
        #expect(try SplicePolicy.parsePrefixes("10.0.0.0/8, 2001:db8::/32", what: "servers").map(\.description)
                == ["10.0.0.0/8", "2001:db8::/32"])
        for bad in ["10.0.0.0/33", "garbage", "10.0.0.0/8,,10.1.0.0/16", ",", "2001:db8::/129", "10.0.0.0/-1"] {
            #expect(throws: SplicePolicyError.self, "'\(bad)' was accepted") {
                try SplicePolicy.parsePrefixes(bad, what: "servers")
            }
        }
        do {
            _ = try SplicePolicy.parsePrefixes("10.0.0.0/33", what: "servers")
        } catch {
            #expect(error.description.contains("10.0.0.0/33") && error.description.contains("servers"))
        }
    }

    @Test("a policy request: an enabled policy needs a port; port 0 and bad prefixes are refused")
    func validatingInit() throws {
        let p = try SplicePolicy(validating: true, ports: [80, 443], servers: ["10.0.0.0/8"], clients: [])
        #expect(p.enabled && p.ports == [80, 443] && p.servers.map(\.description) == ["10.0.0.0/8"] && p.clients.isEmpty)
        // Disabled, no ports: the daemon's bypass-only policy, as `policy --disable` sends it back.
        #expect(try SplicePolicy(validating: false, ports: [], servers: [], clients: []) == .bypassOnly)

        #expect(throws: SplicePolicyError.self) { try SplicePolicy(validating: true, ports: [], servers: [], clients: []) }
        #expect(throws: SplicePolicyError.self) { try SplicePolicy(validating: true, ports: [80, 0], servers: [], clients: []) }
        #expect(throws: SplicePolicyError.self) { try SplicePolicy(validating: false, ports: [0], servers: [], clients: []) }
        #expect(throws: SplicePolicyError.self) {
            try SplicePolicy(validating: true, ports: [80], servers: ["10.0.0.0/33"], clients: [])
        }
        #expect(throws: SplicePolicyError.self) { try SplicePolicy(validating: true, ports: [80], servers: [], clients: [""]) }
        do {
            _ = try SplicePolicy(validating: true, ports: [], servers: [], clients: [])
        } catch {
            #expect(error.description.contains("at least one port"))
        }
    }
}

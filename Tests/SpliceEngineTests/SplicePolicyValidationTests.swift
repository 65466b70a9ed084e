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

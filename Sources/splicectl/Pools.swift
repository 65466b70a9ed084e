import ArgumentParser
import Foundation
import SpliceControlProtocol

/// `splicectl pools`: the layer-7 balancer's backend pools, kept by spliced with the splice
/// rules (Docs/balancer.md).
struct Pools: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or change the balancer's backend pools (which servers a rule's connections are spliced to).",
        discussion: """
        pools [list]                          the pools, their method and members
        pools add NAME [--method M] [--hash-header H] [--backend A:P[:W]]...
                                              a new pool (default: round-robin)
        pools remove NAME                     remove a pool no rule names
        pools member-add NAME A:P[:W]         add a member (weight 1-256, default 1)
        pools member-remove NAME A:P          remove a member
        pools drain NAME A:P                  the member takes no new requests
        pools undrain NAME A:P                the member takes new requests again
        pools reset A:P                       reset every flow joined to that backend, at both
                                              ends (as when its health check takes it out)

        An IPv6 member is written in brackets: [2001:db8::11]:80:2. Methods: round-robin, \
        weighted-round-robin, least-connections, source-hash, host-hash, path-hash, sni-hash, and \
        header-hash, which needs --hash-header NAME (the header whose value is hashed). A hash whose \
        field the request lacks falls back to source-hash. A rule names its pool with \
        `splicectl rules add --action splice --pool NAME`. New requests follow a change at once.
        """)
    @OptionGroup var options: SocketOptions

    @Argument(help: "list, add, remove, member-add, member-remove, drain, undrain or reset.")
    var operation: String = "list"
    @Argument(help: "The pool's NAME, then ADDRESS:PORT[:WEIGHT] for the member operations.")
    var operands: [String] = []

    @Option(name: .long, help: ArgumentHelp("With `add`: how a member is picked (default round-robin).", valueName: "method"))
    var method: String?
    @Option(name: .long, help: "With `add --method header-hash`: the request header whose value is hashed.")
    var hashHeader: String?
    @Option(name: .long, help: ArgumentHelp("With `add`: a member, ADDRESS:PORT[:WEIGHT] ([IPv6]:PORT[:WEIGHT]); repeat for more.",
                                            valueName: "member"))
    var backend: [String] = []
    @Option(name: .long, help: ArgumentHelp("With `add`: the members' health check, run by each proxy: a TCP connect, or an HTTP GET whose answer must carry --check-status.", valueName: "tcp|http"))
    var check: String?
    @Option(name: .long, help: "With `--check http`: the path asked for (default /).")
    var checkPath: String?
    @Option(name: .long, parsing: .unconditional, help: "With `--check http`: the status expected (default 200).")
    var checkStatus: Int?
    @Option(name: .long, parsing: .unconditional, help: "With `--check`: milliseconds between two checks of a member (default 1000).")
    var checkIntervalMs: Int?
    @Option(name: .long, parsing: .unconditional, help: "With `--check`: milliseconds a check may take (default 1000).")
    var checkTimeoutMs: Int?
    @Option(name: .long, parsing: .unconditional, help: "With `--check`: failed checks in a row that take a member out (default 2); as many passed ones bring it back.")
    var checkFall: Int?

    static let operandCounts = ["list": 0, "add": 1, "remove": 1, "member-add": 2, "member-remove": 2, "drain": 2, "undrain": 2,
                                "reset": 1]
    static let operationList = "list, add, remove, member-add, member-remove, drain, undrain or reset"

    func validate() throws {
        guard let wanted = Pools.operandCounts[operation] else {
            throw ValidationError("unknown pools operation '\(operation)' (expected \(Pools.operationList))")
        }
        guard operands.count == wanted else {
            let expected = wanted == 0 ? "no operand" : operation == "reset" ? "one operand (ADDRESS:PORT)"
                : wanted == 1 ? "one operand (NAME)" : "two operands (NAME ADDRESS:PORT)"
            throw ValidationError("pools \(operation) takes \(expected), not \(operands.count)")
        }
        if operation != "add" && (method != nil || hashHeader != nil || !backend.isEmpty || check != nil) {
            throw ValidationError("--method, --hash-header, --backend and --check belong to `pools add`, not `pools \(operation)`")
        }
        if operation == "add" { _ = try newPool() }
        if operation == "reset" {
            _ = try member()
        } else {
            if wanted > 0 { try Pools.checkName(operands[0]) }
            if wanted == 2 { _ = try member() }
        }
    }

    /// A usage error when `name` cannot be a pool's name, as spliced would say it, after
    /// `label` ("pool name '' is empty", "--pool: name '' is empty").
    static func checkName(_ name: String, label: String = "pool ") throws {
        do { try RuleSet(pools: [Pool(name: name)]).validate() } catch {
            throw ValidationError(label + error.description.replacingOccurrences(of: "pool 1: ", with: ""))
        }
    }

    /// The pool `add` describes, checked as spliced will check it (a usage error here).
    func newPool() throws -> Pool {
        var m = BalanceMethod.roundRobin
        if let method {
            guard let parsed = BalanceMethod(rawValue: method) else {
                throw ValidationError("--method '\(method)' is not one of \(BalanceMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            m = parsed
        }
        if m == .headerHash && hashHeader == nil {
            throw ValidationError("--method header-hash needs --hash-header NAME (the header whose value is hashed)")
        }
        if m != .headerHash && hashHeader != nil {
            throw ValidationError("--hash-header is only for --method header-hash, not \(m.rawValue)")
        }
        let backends = try backend.map { text in
            do { return try Backend.parse(text) } catch { throw ValidationError("--backend: \(error)") }
        }
        var healthCheck: HealthCheck?
        if let check {
            guard let kind = HealthCheck.Kind(rawValue: check) else {
                throw ValidationError("--check '\(check)' is not tcp or http")
            }
            var h = HealthCheck(kind: kind, path: checkPath, expectStatus: checkStatus)
            if let v = checkIntervalMs { h.intervalMilliseconds = v }
            if let v = checkTimeoutMs { h.timeoutMilliseconds = v }
            if let v = checkFall { h.fall = v; h.rise = v }
            healthCheck = h
        } else if checkPath != nil || checkStatus != nil || checkIntervalMs != nil || checkTimeoutMs != nil || checkFall != nil {
            throw ValidationError("--check-path, --check-status, --check-interval-ms, --check-timeout-ms and --check-fall need --check tcp|http")
        }
        let pool = Pool(name: operands[0], method: m, hashHeader: hashHeader, backends: backends, check: healthCheck)
        try Pools.checkName(pool.name)
        do { try RuleSet(pools: [pool]).validate() } catch { throw ValidationError(error.description) }
        return pool
    }

    /// The member operand: with a weight for `member-add`, without for the others (they go by
    /// the member's key).
    func member() throws -> Backend {
        let text = operands[operation == "reset" ? 0 : 1]
        let b: Backend
        do { b = try Backend.parse(text) } catch { throw ValidationError("\(error)") }
        let afterAddress = text.hasPrefix("[") ? text[(text.firstIndex(of: "]") ?? text.startIndex)...] : text[...]
        if operation != "member-add" && afterAddress.filter({ $0 == ":" }).count > 1 {
            throw ValidationError("pools \(operation) takes the member as ADDRESS:PORT, without a weight ('\(text)')")
        }
        return b
    }

    func run() throws {
        var request = ControlRequest(command: .rules)
        switch operation {
        case "add":
            request = ControlRequest(command: .addPool, pool: try newPool())
        case "remove":
            request = ControlRequest(command: .removePool, poolName: operands[0])
        case "member-add":
            request = ControlRequest(command: .addMember, poolName: operands[0], member: try member())
        case "member-remove":
            request = ControlRequest(command: .removeMember, poolName: operands[0], member: try member())
        case "drain":
            request = ControlRequest(command: .drainMember, poolName: operands[0], member: try member())
        case "undrain":
            request = ControlRequest(command: .undrainMember, poolName: operands[0], member: try member())
        case "reset":
            let b = try member()
            let n = try options.request(ControlRequest(command: .resetBackend, member: b)).flowsReset ?? 0
            struct Reset: Encodable { var backend: String; var flowsReset: Int }
            if options.json { return try printJSON(Reset(backend: b.key, flowsReset: n)) }
            print("\(n) joined flow\(n == 1 ? "" : "s") to \(b.key) reset")
            return
        default:
            break
        }
        let set = try options.request(request).rules ?? .empty
        if options.json { return try printJSON(set.pools) }
        print(Pools.table(set.pools), terminator: "")
        print("\(set.pools.count) pool\(set.pools.count == 1 ? "" : "s"); rules version \(set.version)")
    }

    /// One line per pool: its name, its method (with the hashed header) and its members, each
    /// with its weight and, when drained, "drained".
    ///
    ///     POOL    METHOD                 MEMBERS
    ///     web     round-robin            10.0.0.11:80 weight=1, 10.0.0.12:80 weight=2 drained
    static func table(_ pools: [Pool]) -> String {
        guard !pools.isEmpty else { return "" }
        let rows = pools.map { p -> [String] in
            var method = p.hashHeader.map { "\(p.method.rawValue)(\($0))" } ?? p.method.rawValue
            if let c = p.check {
                method += " check=\(c.kind.rawValue)" + (c.path.map { ":\($0)" } ?? "") + "/\(c.intervalMilliseconds)ms"
            }
            let members = p.backends.isEmpty ? "(none)" : p.backends.map { b in
                "\(b.key) weight=\(b.weight)" + (b.drained ? " drained" : "")
            }.joined(separator: ", ")
            return [p.name, method, members]
        }
        let all = [["POOL", "METHOD", "MEMBERS"]] + rows
        let widths = (0..<2).map { c in all.map { $0[c].count }.max() ?? 0 }
        return all.map { row in
            (0..<2).map { row[$0] + String(repeating: " ", count: widths[$0] - row[$0].count + 2) }.joined() + row[2] + "\n"
        }.joined()
    }
}

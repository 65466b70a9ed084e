import ArgumentParser
import Foundation
import SpliceControlProtocol

/// `splicectl rules`: the splice rules spliced keeps and pushes to its proxies (seed 003).
struct Rules: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or change the splice rules (which connections the proxy splices, keeps or bypasses).",
        discussion: """
        rules [list]                          the rules in force, in order, and the default action
        rules add --action A [MATCH...]       a rule at the end (or at --position N)
        rules remove ID                       remove rule ID
        rules move ID POSITION                move rule ID to POSITION (1 = first)
        rules default --action A [--first-bytes-timeout-ms N]
                                              the action when no rule matches, the bytes do not come in time, or cannot be parsed
        rules load FILE                       replace the whole set with a JSON rule set (as `rules --json` prints it)

        Rules are tried in order; the first that matches decides. Connection matches: --clients, --servers (prefixes), \
        --ports. On the client's first bytes: --proto (http, tls, other), --method, --host (*.example.com for subdomains), \
        --path-prefix, --path-pattern (glob: * and ?), --header NAME[:VALUE], --sni, --after-bytes N. On the response \
        head: --status, --content-length-above, --content-type (prefix). Actions: proxy (stay in the path), splice (step \
        out after the request, or after the response head for a rule with response matches), bypass (step out as soon as the rule matches: before any byte for a rule on the connection alone). \
        With splice, --pool NAME sends the balancer's connections to a pool of `splicectl pools` (Docs/balancer.md). \
        New connections follow a change at once; connections already decided keep their decision. See Docs/splicing.md.
        """)
    @OptionGroup var options: SocketOptions

    @Argument(help: "list, add, remove, move, default or load.")
    var operation: String = "list"
    @Argument(help: "ID, then POSITION for move; FILE for load.")
    var operands: [String] = []

    @Option(name: .long, help: "proxy, splice or bypass.") var action: String?
    @Option(name: .long, parsing: .unconditional, help: "Where the new rule goes (1 = first; default: last).") var position: Int?
    @Option(name: .long, help: "A label shown with the rule.") var name: String?
    @Option(name: .long, help: "With --action splice: the pool (splicectl pools) the balancer sends the connections to.") var pool: String?
    @Flag(name: .long, help: "With --action splice on a balancer service: decide each request of a keep-alive connection on its own and join only its response; the flow comes back to the proxy at the response's end.") var perRequest = false
    @Option(name: .long, help: ArgumentHelp("With --action splice on a balancer service: join only this direction (the backend's bytes to the client, or the client's to the backend); the proxy keeps relaying the other.", valueName: "to-client|to-server")) var oneWay: String?
    @Option(name: .long, help: ArgumentHelp("With --per-request: a backend's FIN after a response goes through to the client (propagate) or ends only the backend connection (process).", valueName: "propagate|process")) var fin: String?
    @Option(name: .long, help: "Client prefixes, comma separated.") var clients: String?
    @Option(name: .long, help: "Server prefixes, comma separated.") var servers: String?
    @Option(name: .long, parsing: .unconditional, help: "Server ports, comma separated.") var ports: String?
    @Option(name: .long, help: "What the first bytes are: http, tls or other.") var proto: String?
    @Option(name: .long, help: "HTTP method, e.g. GET.") var method: String?
    @Option(name: .long, help: "HTTP Host (*.example.com: its subdomains).") var host: String?
    @Option(name: .long, help: "HTTP request target prefix, e.g. /videos/.") var pathPrefix: String?
    @Option(name: .long, help: "HTTP request target glob (* and ?), e.g. '/files/*.iso'.") var pathPattern: String?
    @Option(name: .long, help: "An HTTP request header NAME or NAME:VALUE.") var header: String?
    @Option(name: .long, help: "TLS server name of the ClientHello (*.example.com: its subdomains).") var sni: String?
    @Option(name: .long, parsing: .unconditional, help: "Match once this many bytes came from the client (1-16384).") var afterBytes: Int?
    @Option(name: .long, parsing: .unconditional, help: "Response status codes, comma separated.") var status: String?
    @Option(name: .long, parsing: .unconditional, help: "Response Content-Length above this many bytes.") var contentLengthAbove: Int?
    @Option(name: .long, help: "Response Content-Type prefix, e.g. video/.") var contentType: String?
    @Option(name: .long, parsing: .unconditional, help: "With `default`: how long to wait for the client's first bytes.") var firstBytesTimeoutMs: Int?
    @Option(name: .long, help: ArgumentHelp("With `default`: who reads the client's first bytes for the rules that need them: the engine (before the proxy is engaged) or the proxy (after the handshake is replayed to it).", valueName: "engine|proxy")) var requestReader: String?

    func validate() throws {
        guard ["list", "add", "remove", "move", "default", "load"].contains(operation) else {
            throw ValidationError("unknown rules operation '\(operation)' (expected list, add, remove, move, default or load)")
        }
        let wanted = ["list": 0, "add": 0, "remove": 1, "move": 2, "default": 0, "load": 1][operation]!
        guard operands.count == wanted else {
            throw ValidationError("rules \(operation) takes \(wanted == 0 ? "no operand" : wanted == 1 ? "one operand" : "two operands"), not \(operands.count)")
        }
        if operation == "add" { _ = try newRule() }
        let matchGiven = [clients, servers, ports, proto, method, host, pathPrefix, pathPattern, header, sni, status,
                          contentType, name, pool, fin, oneWay].contains { $0 != nil } || afterBytes != nil || contentLengthAbove != nil || perRequest
        if operation != "add" && (matchGiven || position != nil) {
            throw ValidationError("match options, --name, --pool, --per-request, --fin, --one-way and --position belong to `rules add`, not `rules \(operation)`")
        }
        if operation != "add" && operation != "default" && action != nil {
            throw ValidationError("--action belongs to `rules add` and `rules default`, not `rules \(operation)`")
        }
        if operation != "default" && firstBytesTimeoutMs != nil {
            throw ValidationError("--first-bytes-timeout-ms belongs to `rules default`")
        }
        if operation != "default" && requestReader != nil {
            throw ValidationError("--request-reader belongs to `rules default`")
        }
        if operation == "default" {
            guard action != nil || firstBytesTimeoutMs != nil || requestReader != nil else {
                throw ValidationError("rules default needs --action, --first-bytes-timeout-ms and/or --request-reader")
            }
            if let action { _ = try parsedAction(action) }
            if let r = requestReader, RequestReader(rawValue: r) == nil {
                throw ValidationError("--request-reader '\(r)' is not one of engine, proxy")
            }
            if let t = firstBytesTimeoutMs, !RuleSet.timeoutRange.contains(t) {
                throw ValidationError("--first-bytes-timeout-ms \(t) is out of range (10-600000)")
            }
        }
        if operation == "remove" || operation == "move" {
            for o in operands where Int(o) == nil || Int(o)! < 1 {
                throw ValidationError("'\(o)' is not a rule id or position (a whole number from 1)")
            }
        }
    }

    func parsedAction(_ text: String) throws -> RuleAction {
        guard let a = RuleAction(rawValue: text) else {
            throw ValidationError("--action '\(text)' is not one of proxy, splice, bypass")
        }
        return a
    }

    /// The rule `add` describes, checked as spliced will check it (a usage error here).
    func newRule() throws -> SpliceRule {
        guard let action else { throw ValidationError("rules add needs --action (proxy, splice or bypass)") }
        func list(_ s: String?) -> [String]? {
            s.map { $0.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) } }
        }
        func numbers<T: FixedWidthInteger>(_ option: String, _ s: String?, _ range: ClosedRange<T>) throws -> [T]? {
            try list(s).map { items in
                try items.map { item in
                    guard let v = T(item), range.contains(v) else {
                        throw ValidationError("\(option): '\(item)' is not a number from \(range.lowerBound) to \(range.upperBound)")
                    }
                    return v
                }
            }
        }
        var headerMatch: HeaderMatch?
        if let header {
            let parts = header.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            headerMatch = HeaderMatch(name: String(parts[0]).trimmingCharacters(in: .whitespaces),
                                      value: parts.count == 2 ? String(parts[1]).trimmingCharacters(in: .whitespaces) : nil)
        }
        let match = RuleMatch(clients: list(clients), servers: list(servers),
                              ports: try numbers("--ports", ports, UInt16(1)...UInt16.max),
                              proto: proto, method: method, host: host, pathPrefix: pathPrefix, pathPattern: pathPattern,
                              header: headerMatch, sni: sni, afterBytes: afterBytes,
                              status: try numbers("--status", status, 100...599),
                              contentLengthAbove: contentLengthAbove, contentType: contentType)
        var finHandling = FinHandling.propagate
        if let fin {
            guard let f = FinHandling(rawValue: fin) else { throw ValidationError("--fin '\(fin)': expected propagate or process") }
            finHandling = f
        }
        var direction: OneWay?
        if let oneWay {
            guard let d = OneWay(rawValue: oneWay) else { throw ValidationError("--one-way '\(oneWay)': expected to-client or to-server") }
            direction = d
        }
        let rule = SpliceRule(name: name, match: match, action: try parsedAction(action), pool: pool,
                              perRequest: perRequest, fin: finHandling, oneWay: direction)
        if let pool {
            guard rule.action != .bypass else {
                throw ValidationError("--pool needs --action splice or proxy (the balancer's connections go to the pool, joined or relayed), not --action \(action)")
            }
            try Pools.checkName(pool, label: "--pool: ")
        }
        // Whether the pool exists is spliced's to say; here it is given one of that name.
        do { try RuleSet(rules: [rule], pools: pool.map { [Pool(name: $0)] } ?? []).validate() } catch {
            // (The rule's JSON fields named as this command's flags.)
            throw ValidationError(error.description.replacingOccurrences(of: "rule 1: ", with: "")
                .replacingOccurrences(of: "perRequest", with: "--per-request")
                .replacingOccurrences(of: "oneWay", with: "--one-way")
                .replacingOccurrences(of: "fin process", with: "--fin process"))
        }
        if let position, position < 1 { throw ValidationError("--position \(position) is out of range (from 1)") }
        return rule
    }

    func run() throws {
        var request = ControlRequest(command: .rules)
        switch operation {
        case "add":
            request = ControlRequest(command: .addRule, rule: try newRule(), position: position)
        case "remove":
            request = ControlRequest(command: .removeRule, ruleID: Int(operands[0]))
        case "move":
            request = ControlRequest(command: .moveRule, ruleID: Int(operands[0]), position: Int(operands[1]))
        case "default":
            var set = try options.request(.rules).rules ?? .empty
            if let action { set.defaultAction = try parsedAction(action) }
            if let t = firstBytesTimeoutMs { set.firstBytesTimeoutMilliseconds = t }
            if let r = requestReader.flatMap(RequestReader.init(rawValue:)) { set.requestReader = r }
            request = ControlRequest(command: .setRules, rules: set)
        case "load":
            let path = operands[0]
            guard let data = FileManager.default.contents(atPath: path) else {
                Rules.exit(withError: ValidationError("cannot read \(path)"))
            }
            do {
                let set = try JSONDecoder().decode(RuleSet.self, from: data)
                try set.validate()
                request = ControlRequest(command: .setRules, rules: set)
            } catch let e as RuleError {
                Rules.exit(withError: ValidationError("\(path): \(e)"))
            } catch {
                Rules.exit(withError: ValidationError("\(path) is not a rule set: \(error)"))
            }
        default:
            break
        }
        let set = try options.request(request).rules ?? .empty
        if options.json { return try printJSON(set) }
        for r in set.rules { print(r.describe()) }
        print("default: \(set.defaultAction.rawValue) (first bytes awaited \(set.firstBytesTimeoutMilliseconds) ms, read by the \(set.requestReader.rawValue)); version \(set.version)")
    }
}

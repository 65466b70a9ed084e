#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import Logging
import SpliceControlProtocol
import SpliceDaemonCore
import SpliceEngine
import SpliceWire

/// What the daemon was told to do, validated.
struct DaemonConfiguration: Sendable {
    var queues: [UInt16]
    /// Queues of the proxy's own packets: bound without fail-open, so that a full queue drops.
    var proxyQueues: [UInt16]
    /// The queue of the ends' SYN and SYN-ACK packets, if any (fail-open, short, read last).
    var synQueue: UInt16?
    var synQueueMaxLength: UInt32
    /// The NFLOG group of spliced flows' FINs (nil: none bound).
    var finLogGroup: UInt16?
    /// The NFLOG group of the intercepted SYNs and SYN-ACKs as they leave the router (nil:
    /// none bound).
    var synLogGroup: UInt16?
    var controlSocket: String
    var pidfile: String?
    var maxFlows: Int
    var maxBlocks: Int
    var queueMaxLength: UInt32
    /// The ends' queues accept (NFQA_CFG_F_FAIL_OPEN) instead of dropping when full.
    var acceptWhenQueueFull: Bool
    var batch: Int
    var policy: SplicePolicy
    var marks: SpliceMarks
    var proxyPidfile: String?
    var holdGraceMilliseconds: Int
    var heartbeatTimeoutMilliseconds: Int
    var replayPatienceMilliseconds: Int
    var rules: RuleSet
    var readers: ReaderThreads
}

/// How the queues are read (`--reader-threads`).
enum ReaderThreads: String, CaseIterable {
    /// One thread polls every queue.
    case one
    /// The handshake queue (`--syn-queue`) on a thread of its own, the others on one.
    case handshakesApart = "handshakes-apart"
    /// A thread per queue.
    case perQueue = "per-queue"
}

@main
struct SplicedCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spliced",
        abstract: "The tcpsplice verdict engine: reads NFQUEUE, tracks flows, returns verdicts.",
        discussion: """
        Run as root in the router (or its network namespace) after Scripts/install-rules.sh has \
        diverted the intercepted ports into the queue(s). Stops on SIGTERM or SIGINT; while it is \
        not running the rules fail open and the kernel forwards.
        """)

    // Options that take a number are parsed `.unconditional`: their value is the next argument
    // even when it begins with '-', so that "-5" is reported as out of range, not as a missing
    // value (or an unknown option).
    @Option(name: .long, parsing: .unconditionalSingleValue,
            help: ArgumentHelp("NFQUEUE number to bind; repeat for several, or give a range A:B.", valueName: "n|a:b"))
    var queue: [String] = ["0"]

    @Option(name: .long, parsing: .unconditionalSingleValue, help: ArgumentHelp("""
        NFQUEUE number (or range A:B) that carries the proxy's own packets (install-rules.sh \
        --proxy-queue); bound fail-closed: when it is full the kernel drops, never lets a proxy \
        packet through untranslated. Repeatable.
        """, valueName: "n|a:b"))
    var proxyQueue: [String] = []

    @Option(name: .long, help: ArgumentHelp("""
        NFQUEUE number that carries the ends' handshake packets, SYN and SYN-ACK \
        (install-rules.sh --syn-queue): bound fail-open with a short queue \
        (--syn-queue-max-length), and read with a small share of the reader's time, so that a \
        SYN flood past what the engine can take lets new flows by unseen (in bypass) instead \
        of delaying or dropping the packets of established ones.
        """, valueName: "n"))
    var synQueue: UInt16?

    @Option(name: .long, help: "Packets the kernel may hold in the --syn-queue before it lets the next ones by unseen.")
    var synQueueMaxLength: UInt32 = 16384

    @Option(name: .long, help: ArgumentHelp("""
        NFLOG group the rules log a spliced flow's FINs to (install-rules.sh --fin-log-group): \
        the FINs go on unqueued and the flow table follows the flow's end from their copies. \
        'none' binds no group (rules installed without it).
        """, valueName: "n|none"))
    var finLogGroup: String = "23133"

    @Option(name: .long, help: ArgumentHelp("""
        NFLOG group the rules log the intercepted SYNs and SYN-ACKs to as they leave the router \
        (install-rules.sh --syn-log-group): the MSS a rule of the router clamped them to is the \
        one the proxy's sockets are given. 'none' binds no group (rules installed without it).
        """, valueName: "n|none"))
    var synLogGroup: String = "23134"

    @Option(name: .long, help: "Path of the root-only control socket.")
    var controlSocket: String = ControlProtocol.defaultSocketPath

    @Option(name: .long, help: "Write the daemon's pid to this file.")
    var pidfile: String?

    @Option(name: .long, parsing: .unconditional, help: "Flow table capacity (flow entries of 64 bytes). New flows past it are let through untracked.")
    var maxFlows: Int = 262_144

    @Option(name: .long, parsing: .unconditional, help: "Connection blocks (the large per-connection part); default: as many as --max-flows.")
    var maxBlocks: Int?

    @Option(name: .long, parsing: .unconditional, help: "Packets the kernel may hold per queue; past it the kernel drops (see --accept-when-queue-full).",
            transform: { try parsedNumber($0, 1...UInt32.max) })
    var queueMaxLength: UInt32 = 65536

    @Flag(name: .long, help: "When an ends' queue is full, the kernel accepts packets unseen instead of dropping them. Only for engines without a proxy policy: a resilient flow's packet accepted untranslated breaks the flow's timestamps.")
    var acceptWhenQueueFull = false

    @Option(name: .long, parsing: .unconditional, help: "Unchanged accepts gathered into one batch verdict (1 = no batching).")
    var batch: Int = 32

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(name: .long, parsing: .unconditional, help: ArgumentHelp("Server ports whose new flows go through the proxy (resilient mode), comma separated; ranges A:B (every port: 1:65535). Without it, every flow stays in bypass.", valueName: "ports"))
    var proxyPorts: String?

    @Option(name: .long, help: ArgumentHelp("Only servers in these prefixes go through the proxy (comma separated).", valueName: "prefixes"))
    var proxyServers: String?

    @Option(name: .long, help: ArgumentHelp("Only clients in these prefixes go through the proxy (comma separated).", valueName: "prefixes"))
    var proxyClients: String?

    @Option(name: .long, help: "A proxy of another make (e.g. HAProxy): its pidfile; its death is noticed through a pidfd.")
    var proxyPidfile: String?

    @Option(name: .long, parsing: .unconditional, help: "Mark of packets the engine injects toward the wire (as install-rules.sh --inject-mark).")
    var injectMark: String = SpliceMarks.hex(SpliceMarks().inject)

    @Option(name: .long, parsing: .unconditional, help: "Mark the engine sets on packets it hands to the proxy (as install-rules.sh --proxy-mark).")
    var proxyMark: String = SpliceMarks.hex(SpliceMarks().toProxy)

    @Option(name: .long, parsing: .unconditional, help: "Mark of packets for local transparent sockets (as install-rules.sh --local-mark).")
    var localMark: String = SpliceMarks.hex(SpliceMarks().local)

    @Option(name: .long, parsing: .unconditional, help: "Mark the engine sets on a spliced flow's packets; the rules save it as the flow's conntrack mark (as install-rules.sh --splice-mark).")
    var spliceMark: String = SpliceMarks.hex(SpliceMarks().spliced)

    @Option(name: .long, parsing: .unconditional, help: "Mark of the balancer's own sockets (as install-rules.sh --balancer-mark and splice-proxy --balancer-mark).")
    var balancerMark: String = SpliceMarks.hex(SpliceMarks().balancer)

    @Option(name: .long, parsing: .unconditional, help: "Milliseconds an unannounced FIN or RST of the proxy is held before it is let through.")
    var holdGraceMs: Int = 300

    @Option(name: .long, parsing: .unconditional, help: "Milliseconds without a heartbeat after which a registered proxy is taken for dead.")
    var heartbeatTimeoutMs: Int = 5000

    @Option(name: .long, help: ArgumentHelp("Splice rules to start with: a JSON rule set as `splicectl rules --json` prints it (Docs/splicing.md).", valueName: "file"))
    var rules: String?

    @Option(name: .long, parsing: .unconditional, help: "Milliseconds a handshake replayed to the proxy may go unanswered before its flow goes on alone (bypass, proxy-no-answer).")
    var replayPatienceMs: Int = 3000

    @Option(name: .long, help: ArgumentHelp("How the queues are read: one thread for all, the handshake queue (--syn-queue) on a thread of its own and the others on one, or a thread per queue (Docs/architecture.md).", valueName: "one|handshakes-apart|per-queue"))
    var readerThreads: String = ReaderThreads.one.rawValue

    func validate() throws {
        _ = try parsedProxyQueues(queues: try parsedQueues())
        guard maxFlows >= 1 && maxFlows <= 100_000_000 else {
            throw ValidationError("--max-flows must be between 1 and 100000000, not \(maxFlows)")
        }
        if let b = maxBlocks, b < 1 || b > maxFlows {
            throw ValidationError("--max-blocks must be between 1 and --max-flows (\(maxFlows)), not \(b)")
        }
        guard batch >= 1 && batch <= 1024 else { throw ValidationError("--batch must be between 1 and 1024, not \(batch)") }
        guard queueMaxLength >= 1 else { throw ValidationError("--queue-max-length must be at least 1") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(logLevel)'")
        }
        if let problem = ControlProtocol.socketPathProblem(controlSocket) {
            throw ValidationError("--control-socket: \(problem)")
        }
        _ = try parsedPolicy()
        _ = try parsedMarks()
        _ = try parsedRules()
        guard heartbeatTimeoutMs >= 200 && heartbeatTimeoutMs <= 600_000 else {
            throw ValidationError("--heartbeat-timeout-ms must be between 200 and 600000, not \(heartbeatTimeoutMs)")
        }
        guard holdGraceMs >= 100 && holdGraceMs <= 10_000 else {
            throw ValidationError("--hold-grace-ms must be between 100 and 10000, not \(holdGraceMs)")
        }
        guard replayPatienceMs >= 500 && replayPatienceMs <= 60_000 else {
            throw ValidationError("--replay-patience-ms must be between 500 and 60000, not \(replayPatienceMs)")
        }
        guard ReaderThreads(rawValue: readerThreads) != nil else {
            throw ValidationError("--reader-threads must be one, handshakes-apart or per-queue, not '\(readerThreads)'")
        }
    }

    func parsedPolicy() throws -> SplicePolicy {
        guard let proxyPorts else {
            if proxyServers != nil || proxyClients != nil {
                throw ValidationError("--proxy-servers and --proxy-clients need --proxy-ports")
            }
            return .bypassOnly
        }
        // The validation splicectl and the daemon's set-policy use too (SpliceEngine).
        func checked<T>(_ option: String, _ parse: () throws(SplicePolicyError) -> T) throws -> T {
            do { return try parse() } catch { throw ValidationError("\(option): \(error)") }
        }
        let ports = try checked("--proxy-ports") { () throws(SplicePolicyError) in try SplicePolicy.parsePorts(proxyPorts) }
        let servers = try checked("--proxy-servers") { () throws(SplicePolicyError) in
            try SplicePolicy.parsePrefixes(proxyServers ?? "", what: "servers")
        }
        let clients = try checked("--proxy-clients") { () throws(SplicePolicyError) in
            try SplicePolicy.parsePrefixes(proxyClients ?? "", what: "clients")
        }
        return SplicePolicy(ports: PortSet(ports), servers: servers, clients: clients, enabled: true)
    }

    /// The rule set of `--rules`, checked; the error names the file and the problem.
    func parsedRules() throws -> RuleSet {
        guard let rules else { return .empty }
        guard let data = FileManager.default.contents(atPath: rules) else {
            throw ValidationError("--rules: cannot read \(rules)")
        }
        let set: RuleSet
        do { set = try JSONDecoder().decode(RuleSet.self, from: data) } catch {
            throw ValidationError("--rules: \(rules) is not a rule set: \(ruleDecodingProblem(error))")
        }
        var store = RuleStore()
        do { try store.replace(set) } catch { throw ValidationError("--rules: \(rules): \(error)") }
        return store.set
    }

    func parsedMarks() throws -> SpliceMarks {
        func mark(_ s: String, _ name: String) throws -> UInt32 {
            guard let v = ControlProtocol.parseMark(s) else { throw ValidationError("\(name) must be a non-zero mark (hex 0x... or decimal), not '\(s)'") }
            return v
        }
        var m = SpliceMarks()
        m.inject = try mark(injectMark, "--inject-mark")
        m.toProxy = try mark(proxyMark, "--proxy-mark")
        m.local = try mark(localMark, "--local-mark")
        m.spliced = try mark(spliceMark, "--splice-mark")
        m.balancer = try mark(balancerMark, "--balancer-mark")
        guard Set([m.inject, m.toProxy, m.local, m.spliced, m.balancer]).count == 5 else {
            throw ValidationError("--inject-mark, --proxy-mark, --local-mark, --splice-mark and --balancer-mark must differ")
        }
        return m
    }

    /// The queue numbers of `--queue` (or, with `option` "--proxy-queue", of `--proxy-queue`).
    /// An NFLOG group option's value: a group number, or nil for 'none'.
    static func logGroup(_ value: String, option: String) throws -> UInt16? {
        if value == "none" { return nil }
        guard let g = UInt16(value) else {
            throw ValidationError("\(option) '\(value)': give an NFLOG group number 0-65535, or 'none'")
        }
        return g
    }

    func parsedQueues(_ specs: [String]? = nil, option: String = "--queue") throws -> [UInt16] {
        let specs = specs ?? queue
        var out: [UInt16] = []
        for q in specs {
            let parts = q.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 1, let n = UInt16(parts[0]) {
                out.append(n)
            } else if parts.count == 2, let a = UInt16(parts[0]), let b = UInt16(parts[1]), a <= b, b - a < 64 {
                out.append(contentsOf: a...b)
            } else {
                throw ValidationError("\(option) takes a queue number (0-65535) or a range A:B of at most 64 queues, not '\(q)'")
            }
        }
        guard Set(out).count == out.count else { throw ValidationError("\(option) names the same queue twice: \(specs)") }
        return out
    }

    func parsedProxyQueues(queues: [UInt16]) throws -> [UInt16] {
        let out = try parsedQueues(proxyQueue, option: "--proxy-queue")
        let both = Set(out).intersection(queues)
        guard both.isEmpty else {
            throw ValidationError("queue \(both.sorted().map(String.init).joined(separator: ",")) is given to both --queue and --proxy-queue: the ends' queues fail open, the proxy's must not")
        }
        return out
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "spliced")
        guard geteuid() == 0 else {
            // Not a usage error: the arguments are fine, this user cannot start the daemon.
            logger.critical("cannot start: spliced must run as root (it binds NFQUEUE and opens raw sockets); running as uid \(geteuid())")
            throw ExitCode(2)
        }
        let queues = try parsedQueues()
        let proxyQueues = try parsedProxyQueues(queues: queues)
        if let s = synQueue, queues.contains(s) || proxyQueues.contains(s) {
            throw ValidationError("--syn-queue \(s) is also given to --queue or --proxy-queue: each queue has one role")
        }
        guard synQueueMaxLength >= 1 else { throw ValidationError("--syn-queue-max-length must be at least 1") }
        let logGroup = try Self.logGroup(finLogGroup, option: "--fin-log-group")
        let handshakeLogGroup = try Self.logGroup(synLogGroup, option: "--syn-log-group")
        if let g = logGroup, g == handshakeLogGroup {
            throw ValidationError("--fin-log-group and --syn-log-group are both \(g): each log has a group of its own")
        }
        let config = DaemonConfiguration(queues: queues, proxyQueues: proxyQueues,
                                         synQueue: synQueue, synQueueMaxLength: synQueueMaxLength, finLogGroup: logGroup,
                                         synLogGroup: handshakeLogGroup,
                                         controlSocket: controlSocket, pidfile: pidfile,
                                         maxFlows: maxFlows, maxBlocks: maxBlocks ?? maxFlows,
                                         queueMaxLength: queueMaxLength, acceptWhenQueueFull: acceptWhenQueueFull, batch: batch, policy: try parsedPolicy(),
                                         marks: try parsedMarks(), proxyPidfile: proxyPidfile,
                                         holdGraceMilliseconds: holdGraceMs,
                                         heartbeatTimeoutMilliseconds: heartbeatTimeoutMs,
                                         replayPatienceMilliseconds: replayPatienceMs, rules: try parsedRules(),
                                         readers: ReaderThreads(rawValue: readerThreads) ?? .one)
        let daemon: Daemon
        do {
            daemon = try Daemon(configuration: config, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(2)
        }
        if let pidfile {
            let text = "\(getpid())\n"
            let fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd < 0 || write(fd, text, text.utf8.count) < 0 {
                logger.error("cannot write pidfile \(pidfile): \(String(cString: strerror(errno)))")
            }
            if fd >= 0 { close(fd) }
        }
        // A runtime failure (a queue that could not be read any more, logged) exits 2, as a
        // failure to start does (Docs/cli.md).
        let status = daemon.run()
        if status != 0 { throw ExitCode(2) }
    }
}

/// A JSON decoding error in a few words (the field's path and what is wrong).
func ruleDecodingProblem(_ error: any Error) -> String {
    func path(_ p: [any CodingKey]) -> String {
        p.reduce("") { s, k in k.intValue.map { s + "[\($0)]" } ?? (s.isEmpty ? k.stringValue : s + "." + k.stringValue) }
    }
    switch error as? DecodingError {
    case .keyNotFound(let k, let c)?: return "\(path(c.codingPath + [k])) is missing"
    case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?: return "\(path(c.codingPath)): \(c.debugDescription)"
    case .dataCorrupted(let c)?: return c.codingPath.isEmpty ? "not valid JSON" : "\(path(c.codingPath)): \(c.debugDescription)"
    default: return "\(error)"
    }
}

/// The value of a numeric option, as an option's `transform`: a number outside `range` (a
/// negative one included) is refused as out of range, and the parser's message names the option
/// and the value ("The value '-5' is invalid for '--queue-max-length <n>': out of range ...").
private func parsedNumber<T: FixedWidthInteger>(_ text: String, _ range: ClosedRange<T>) throws -> T {
    let digits = text.first == "-" || text.first == "+" ? text.dropFirst() : Substring(text)
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
        throw ValidationError("not a number")
    }
    guard let v = T(text), range.contains(v) else {
        throw ValidationError("out of range (\(range.lowerBound) to \(range.upperBound))")
    }
    return v
}

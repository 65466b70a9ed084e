#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import SpliceControlProtocol
import SpliceEngine
import SpliceKernel
import SpliceWire

@main
enum SplicectlMain {
    /// `splicectl --socket PATH status` and `splicectl status --socket PATH` both work: options
    /// given before the subcommand are moved after it.
    static func main() {
        // A daemon that refuses us closes the connection, maybe before our request is
        // written: that must be an error we report, not death by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        var args = Array(CommandLine.arguments.dropFirst())
        var leading: [String] = []
        while let first = args.first, first.hasPrefix("-"), !["-h", "--help", "--version"].contains(first) {
            leading.append(args.removeFirst())
            if first == "--socket", let value = args.first {
                leading.append(value)
                args.removeFirst()
            }
        }
        let known = Splicectl.configuration.subcommands.map { $0._commandName } + ["help"]
        if let first = args.first, !first.hasPrefix("-"), !known.contains(first) {
            FileHandle.standardError.write(Data("splicectl: unknown subcommand '\(first)' (expected \(known.dropLast().joined(separator: ", ")); see splicectl --help)\n".utf8))
            exit(64)
        }
        // Without a subcommand the leading options go to splicectl itself, which takes them
        // too (so `splicectl --socket PATH` prints the help, naming the subcommands).
        if !args.isEmpty { args.insert(contentsOf: leading, at: 1) } else { args = leading }
        Splicectl.main(args)
    }
}

struct Splicectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "splicectl",
        abstract: "Control and inspect a running spliced through its root-only control socket.",
        discussion: """
        --socket and --json may come before or after the subcommand. Exit status: 0 success; \
        3 spliced cannot be reached, refused us (not root) or refused the request; 64 a bad \
        argument.
        """,
        subcommands: [Status.self, Flows.self, Policy.self, Rules.self, Pools.self])

    /// Accepted before the subcommand (moved after it by `SplicectlMain`); here so that they
    /// are listed in the help, and parsed when no subcommand follows.
    @OptionGroup var options: SocketOptions
}

struct SocketOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket.")
    var socket: String = ControlProtocol.defaultSocketPath

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    func validate() throws {
        if let problem = ControlProtocol.socketPathProblem(socket) {
            throw ValidationError("--socket: \(problem)")
        }
    }

    /// Exit status when spliced cannot be reached, refuses us, or refuses the request.
    static let daemonFailure: Int32 = 3

    func request(_ command: ControlRequest.Command, policy: PolicyConfig? = nil) throws -> ControlResponse {
        try request(ControlRequest(command: command, policy: policy))
    }

    func request(_ request: ControlRequest) throws -> ControlResponse {
        do {
            let client = try ControlClient(path: socket)
            return try client.request(request)
        } catch {
            FileHandle.standardError.write(Data("splicectl: \(SocketOptions.explain(error, socket: socket))\n".utf8))
            throw ExitCode(SocketOptions.daemonFailure)
        }
    }

    /// What a failure to talk to spliced means. Only root may: the socket file is 0600 and the
    /// daemon checks the peer's uid, answering one line and closing (before our request is
    /// written, at times). Whatever then fails for a non-root user is that refusal.
    static func explain(_ error: any Error, socket: String) -> String {
        if let f = error as? ControlClient.Failure, case .notRunning = f { return f.description }
        if geteuid() != 0 {
            return "the control socket \(socket) refused us: spliced accepts root only (we are uid \(geteuid()); \(error))"
        }
        if let f = error as? ControlClient.Failure, case .daemon(let why) = f { return "spliced refused the request: \(why)" }
        return "\(error)"
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Uptime, queues, packets and verdicts, queue drops, flows by state, memory, proxies.")
    @OptionGroup var options: SocketOptions

    func run() throws {
        guard let s = try options.request(.status).status else { throw ValidationError("the daemon sent no status") }
        if options.json { return try printJSON(s) }
        print("spliced \(s.version) (pid \(s.pid)), up \(Format.duration(s.uptimeSeconds))")
        print("queues:")
        for q in s.queues {
            let kind = q.failClosed == true ? " (proxy's packets, fail-closed)"
                : q.role == "handshakes" ? " (handshakes, fail-open when full)" : ""
            var line = "  queue \(q.number)\(kind): \(q.packets) packets, \(q.verdictMessages) verdict messages\(q.verdictSends.map { " in \($0) sends" } ?? "")\((q.sendsBeforeInjection ?? 0) > 0 ? " (\(q.sendsBeforeInjection!) before a packet the engine made)" : "")\((q.verdictSendFailures ?? 0) > 0 ? " (\(q.verdictSendFailures!) refused)" : ""), \(q.receiveOverruns) receive overruns"
            if let t = q.queueTotal, let qd = q.queueDropped, let ud = q.userDropped {
                line += "; kernel: waiting \(t), queue-dropped \(qd), user-dropped \(ud)"
            } else {
                line += "; kernel: not bound (no line in /proc/net/netfilter/nfnetlink_queue)"
            }
            print(line)
            if let d = q.delay, d.samples > 0 {
                let shares = zip(d.boundsMicroseconds.map { "<=\(Format.milliseconds($0))" } + ["longer"], d.buckets)
                    .map { "\($0) \(Format.percent($1, of: d.samples))" }.joined(separator: ", ")
                print("    waited before it was read: mean \(Format.milliseconds(d.totalMicroseconds / d.samples)), max \(Format.milliseconds(d.maxMicroseconds)) (\(d.samples) packets timed: \(shares))")
            }
        }
        let p = s.packets
        print("packets: \(p.total) (\(Format.bytes(p.bytes))): tcp \(p.tcp), not-tcp \(p.notTCP), fragments \(p.fragments), malformed \(p.malformed), untracked \(p.untracked)")
        print("verdicts: accept \(s.verdicts.accept), accept-modified \(s.verdicts.acceptModified), drop \(s.verdicts.drop), to-proxy \(s.verdicts.toProxy)")
        let f = s.flows
        let states = f.byState.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let modes = f.byMode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("flows: \(f.total) of \(f.capacity)" + (states.isEmpty ? "" : " (\(states)); \(modes)"))
        let ev = f.events
        print("  created \(ev.created), picked up mid-stream \(ev.pickedUp), expired \(ev.expired), reopened \(ev.reopened), table full \(ev.tableFull), early drops \(ev.earlyDrops), without block \(ev.blocksExhausted), signed (TCP-MD5/AO) left alone \(ev.signed)")
        let m = s.memory
        var mem = "memory: entry \(m.entryBytes) B, block \(m.blockBytes) B (\(m.blocksInUse) of \(m.blockCapacity) in use), index \(Format.bytes(UInt64(m.indexBytes)))"
        mem += "; table in use \(Format.bytes(UInt64(m.inUseBytes))), touched \(Format.bytes(UInt64(m.touchedBytes))), reserved \(Format.bytes(UInt64(m.reservedBytes)))"
        if let r = m.residentBytes, let h = m.peakResidentBytes {
            mem += "; RSS \(Format.bytes(UInt64(r))) (peak \(Format.bytes(UInt64(h))))"
        }
        print(mem)
        if let p = s.policy { print("policy: \(Policy.describe(p))") }
        if let c = s.control { print("control: \(c.clients) of \(c.maxClients) connections, \(c.requests) requests; refused: too many \(c.refusedTooMany), no descriptor \(c.refusedNoDescriptor), not root \(c.refusedNotRoot); dropped: unread \(c.droppedUnread), over-long \(c.droppedOverlong), silent \(c.droppedSilent), idle \(c.closedIdle); timer runs \(c.timerRuns)") }
        if let x = s.splices {
            print("splices: decided proxy \(x.decidedProxy), splice \(x.decidedSplice), bypass \(x.decidedBypass), refused \(x.refused); "
                  + "spliced by the engine at the SYN \(x.decidedAtConnection); "
                  + "requests read by the engine \(x.requestsRead): spliced from the request \(x.decidedAtRequest), to the proxy \(x.requestsToProxy), late \(x.requestsLate); "
                  + "done drained \(x.drained), fell back \(x.fellBack), failed \(x.failed), cancelled \(x.cancelled), asked to wait \(x.notYetDrained), held while the queues held unseen packets \(x.deferredForQueue) (answered at the 20 ms bound \(x.heldPastBound)); "
                  + "window updates \(x.windowUpdates), packets after the splice \(x.packetsAfterSplice)"
                  + (s.finLog.map { "; FINs logged (NFLOG group \($0.group)) \(x.finsLogged), ignored \(x.logsIgnored), copies lost \($0.overruns)" } ?? ""))
        }
        if let b = s.balancer, b != BalancerCounters() {
            print("balancer: joins prepared \(b.prepared), joined \(b.joined), asked to wait \(b.notYetDrained), refused \(b.refused), cancelled \(b.cancelled); "
                  + "packets translated \(b.translated), proxy packets dropped after a join \(b.proxyPacketsDropped), proxy SYNs on a joined flow's port \(b.portsBusy), SYNs to backends sent without ECN \(b.ecnNotAsked), joined clients' packets made not ECN-capable toward their backend \(b.ectCleared) (marked CE, dropped \(b.ceDropped)), window updates \(b.windowUpdates) (left out, nothing new \(b.windowUpdatesSkipped)), reset with their backend \(b.resetForBackend) (again on a challenge ACK \(b.resetAgain)); "
                  + "joined for one response and returned \(b.returned), packets held back \(b.heldBack) (given to the proxy at the return \(b.heldReleased)), given up when the proxy died \(b.returnsGivenUp), backend FINs processed \(b.finsProcessed); "
                  + "chunked responses joined \(b.chunkedJoins), their end found \(b.chunkedEnds), framing lost \(b.chunkedLost), segments past an unseen size line dropped \(b.chunkGaps); "
                  + "one-way joins \(b.oneWayJoined) (both ways after the relayed direction ended \(b.oneWayCompleted)): packets to the proxy \(b.oneWayToProxy), from the proxy rewritten \(b.oneWayFromProxy), ACKs made \(b.oneWayAcks); relayed to their end and let go \(b.relayedLetGo)")
        }
        if let report = s.resilient {
            let r = report.counters
            print("resilient: \(r.flows) flows, \(r.handshakeReplays) handshake replays, \(r.fromProxyTranslated) proxy packets translated, \(r.proxyPacketsDropped) dropped; "
                  + "acks clamped \(r.acksClamped) (SACK taken off \(r.sackTakenOffClamped)), released \(r.acksInjected) (\(r.acksEchoingCE) echoing a congestion mark), suppressed \(r.acksSuppressed); "
                  + "clients validated \(r.clientsValidated), their early packets held \(r.pendingHeld), dropped \(r.pendingDropped); SYNs stripped of Fast Open \(r.fastOpenRemoved); urgent marks taken off toward the proxy \(r.urgentToProxy); flows with ECN set up at the proxy's sockets as at the ends \(r.ecnFlows); proxy packets given their end's DSCP \(r.dscpCopied); hops' too-big errors given to the proxy's sockets \(r.tooBigToProxy); "
                  + (s.synLog.map { "handshakes seen leaving (NFLOG group \($0.group)) \($0.packets), copies lost \($0.overruns), their MSS lowered by the router's rules \(r.mssLowered); " } ?? "")
                  + "flows behind source NAT \(r.sourceNATFlows), their ends' packets given to the proxy by injection \(r.injectedToProxy); "
                  + "FIN/RST held \(r.finRstHeld), released \(r.finRstReleased), discarded \(r.finRstDiscarded), no room \(r.finRstHoldFailed); "
                  + "failovers \(r.failovers), timestamps raised after them \(r.timestampsRaised); "
                  + "replays unanswered (to bypass) \(r.replaysAbandoned), answered without timestamps (to bypass) \(r.proxyWithoutTimestamps), stale proxy sockets reset \(r.staleSocketsReset); "
                  + "injection failures \(r.injectionFailures)")
        }
        if s.proxies.isEmpty {
            print("proxies: none registered")
        } else {
            print("proxies:")
            for px in s.proxies {
                print("  #\(px.id) \(px.name) pid \(px.pid)" + (px.listenPort.map { " port \($0)" } ?? "")
                      + ", registered \(Format.duration(px.registeredSecondsAgo)) ago, last heartbeat \(Format.duration(px.lastHeartbeatSecondsAgo)) ago")
            }
        }
    }
}

struct Flows: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One line per flow, like conntrack -L: tuples, state, mode and why, age, bytes.")
    @OptionGroup var options: SocketOptions

    func run() throws {
        let flows = try options.request(.flows).flows ?? []
        if options.json { return try printJSON(flows) }
        for f in flows.sorted(by: { $0.ageSeconds > $1.ageSeconds }) {
            print("tcp\(f.family == 6 ? "6" : "") \(f.state) src=\(f.src) dst=\(f.dst) sport=\(f.sport) dport=\(f.dport) "
                  + "mode=\(f.mode) reason=\(f.reason) age=\(Format.seconds(f.ageSeconds)) idle=\(Format.seconds(f.idleSeconds)) "
                  + "bytes=\(f.bytesOrig)/\(f.bytesReply)" + (f.phase.map { " phase=\($0)" } ?? "")
                  + (f.proxy.map { " proxy=\($0)" } ?? "")
                  + (f.decision.map { " decision=\($0)" } ?? "") + (f.rule.map { " rule=\($0 == 0 ? "default" : String($0))" } ?? "")
                  + (f.splice.map { " splice=\($0)" } ?? "") + (f.spliceOutcome.map { " (\($0))" } ?? "")
                  + (f.packets.map { " packets=\($0)" } ?? "") + (f.packetsAfterSplice.map { " after-splice=\($0)" } ?? "")
                  + (f.join.map { " join=\($0)" } ?? "") + (f.joinedTo.map { " joined-to=\($0)" } ?? "")
                  + (f.joinOneWay.map { " one-way=\($0)" } ?? "")
                  + (f.pickedUp ? " [picked-up]" : ""))
        }
        FileHandle.standardError.write(Data("splicectl: \(flows.count) flow\(flows.count == 1 ? "" : "s")\n".utf8))
    }
}

struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show or change which new flows go through the proxy (resilient mode).",
        discussion: """
        Without options, shows the policy in force. --enable/--disable switch the proxy path on or off; \
        --ports, --servers and --clients replace those lists (comma separated). --ports takes at least \
        one port (1-65535); for --servers and --clients an empty string clears the list, meaning any. \
        An enabled policy needs ports. Changes apply to new flows; flows in progress keep their mode.
        """)
    @OptionGroup var options: SocketOptions

    @Flag(name: .long, help: "Send claimed flows through the proxy.")
    var enable = false
    @Flag(name: .long, help: "Keep every new flow in bypass.")
    var disable = false
    // .unconditional: "--ports -5" is an out-of-range port, not a missing value.
    @Option(name: .long, parsing: .unconditional, help: "Server ports claimed, comma separated (1-65535); ranges A:B (every port: 1:65535).")
    var ports: String?
    @Option(name: .long, help: "Server prefixes claimed, comma separated.")
    var servers: String?
    @Option(name: .long, help: "Client prefixes claimed, comma separated.")
    var clients: String?

    /// The same validation as spliced's own (SpliceEngine's SplicePolicy): a bad list is a
    /// usage error here, before anything is sent.
    func validate() throws {
        if enable && disable { throw ValidationError("--enable and --disable exclude each other") }
        _ = try parsed()
    }

    func parsed() throws -> (ports: [PortRange]?, servers: [IPPrefix]?, clients: [IPPrefix]?) {
        func checked<T>(_ option: String, _ parse: () throws(SplicePolicyError) -> T) throws -> T {
            do { return try parse() } catch { throw ValidationError("\(option): \(error)") }
        }
        return (try ports.map { p in try checked("--ports") { () throws(SplicePolicyError) in try SplicePolicy.parsePorts(p) } },
                try servers.map { s in
                    try checked("--servers") { () throws(SplicePolicyError) in try SplicePolicy.parsePrefixes(s, what: "servers") } },
                try clients.map { c in
                    try checked("--clients") { () throws(SplicePolicyError) in try SplicePolicy.parsePrefixes(c, what: "clients") } })
    }

    static func describe(_ p: PolicyConfig) -> String {
        guard p.enabled else { return "disabled (every new flow in bypass)" }
        let ports = p.ports.isEmpty ? "any port" : "ports " + p.ports.map(\.description).joined(separator: ",")
        let servers = p.servers.isEmpty ? "any server" : "servers " + p.servers.joined(separator: ",")
        let clients = p.clients.isEmpty ? "any client" : "clients " + p.clients.joined(separator: ",")
        return "through the proxy: \(ports), \(servers), \(clients)"
    }

    func run() throws {
        let changing = enable || disable || ports != nil || servers != nil || clients != nil
        var policy = try options.request(.policy).policy ?? PolicyConfig(enabled: false)
        if changing {
            let given = try parsed()
            if enable { policy.enabled = true }
            if disable { policy.enabled = false }
            if let ports = given.ports { policy.ports = ports }
            if let servers = given.servers { policy.servers = servers.map(\.description) }
            if let clients = given.clients { policy.clients = clients.map(\.description) }
            do {
                _ = try SplicePolicy(validating: policy.enabled, ports: policy.ports, servers: policy.servers,
                                     clients: policy.clients)
            } catch {
                Policy.exit(withError: ValidationError(ports == nil && policy.ports.isEmpty
                    ? "the policy in force has no ports: give --ports too (enabled without ports, it would claim every port)"
                    : "\(error)"))
            }
            policy = try options.request(.setPolicy, policy: policy).policy ?? policy
        }
        if options.json { return try printJSON(policy) }
        print(Policy.describe(policy))
    }
}

enum Format {
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f", v) + " " + units[u]
    }
    static func seconds(_ s: Double) -> String { String(format: "%.1fs", s) }
    /// Microseconds as milliseconds: "0.25 ms", "12 ms".
    static func milliseconds(_ us: UInt64) -> String {
        us >= 10_000 || us % 1000 == 0 ? "\(us / 1000) ms" : String(format: "%.2f ms", Double(us) / 1000)
    }
    static func percent(_ n: UInt64, of total: UInt64) -> String {
        total == 0 ? "0%" : String(format: "%.1f%%", 100 * Double(n) / Double(total))
    }
    static func duration(_ s: Double) -> String {
        let t = Int(s)
        if t < 60 { return String(format: "%.1fs", s) }
        if t < 3600 { return "\(t / 60)m\(t % 60)s" }
        return "\(t / 3600)h\((t % 3600) / 60)m"
    }
}

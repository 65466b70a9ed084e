#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Logging
import SpliceControlProtocol

/// What the daemon was told to do, validated.
struct DaemonConfiguration: Sendable {
    var queues: [UInt16]
    var controlSocket: String
    var pidfile: String?
    var maxFlows: Int
    var maxBlocks: Int
    var queueMaxLength: UInt32
    var batch: Int
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

    @Option(name: .long, help: ArgumentHelp("NFQUEUE number to bind; repeat for several, or give a range A:B.", valueName: "n|a:b"))
    var queue: [String] = ["0"]

    @Option(name: .long, help: "Path of the root-only control socket.")
    var controlSocket: String = ControlProtocol.defaultSocketPath

    @Option(name: .long, help: "Write the daemon's pid to this file.")
    var pidfile: String?

    @Option(name: .long, help: "Flow table capacity (flow entries of 64 bytes). New flows past it are let through untracked.")
    var maxFlows: Int = 262_144

    @Option(name: .long, help: "Connection blocks (the large per-connection part); default: as many as --max-flows.")
    var maxBlocks: Int?

    @Option(name: .long, help: "Packets the kernel may hold per queue before failing open.")
    var queueMaxLength: UInt32 = 8192

    @Option(name: .long, help: "Unchanged accepts gathered into one batch verdict (1 = no batching).")
    var batch: Int = 32

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        _ = try parsedQueues()
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
        guard !controlSocket.isEmpty else { throw ValidationError("--control-socket must not be empty") }
    }

    func parsedQueues() throws -> [UInt16] {
        var out: [UInt16] = []
        for q in queue {
            let parts = q.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count == 1, let n = UInt16(parts[0]) {
                out.append(n)
            } else if parts.count == 2, let a = UInt16(parts[0]), let b = UInt16(parts[1]), a <= b, b - a < 64 {
                out.append(contentsOf: a...b)
            } else {
                throw ValidationError("--queue takes a queue number (0-65535) or a range A:B of at most 64 queues, not '\(q)'")
            }
        }
        guard Set(out).count == out.count else { throw ValidationError("--queue names the same queue twice: \(queue)") }
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
            throw ValidationError("spliced must run as root (it binds NFQUEUE and opens raw sockets)")
        }
        let config = DaemonConfiguration(queues: try parsedQueues(), controlSocket: controlSocket, pidfile: pidfile,
                                         maxFlows: maxFlows, maxBlocks: maxBlocks ?? maxFlows,
                                         queueMaxLength: queueMaxLength, batch: batch)
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
        let status = daemon.run()
        if status != 0 { throw ExitCode(status) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Logging
import SpliceControlProtocol
import SpliceKernel

/// The application proxy. In this release it registers with spliced over the control socket
/// and keeps the registration alive with heartbeats (reconnecting when the daemon restarts);
/// the transparent relay arrives with the resilient mode (see Docs/architecture.md).
@main
struct SpliceProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "splice-proxy",
        abstract: "The tcpsplice application proxy: registers with spliced and keeps its registration alive.")

    @Option(name: .long, help: "spliced's control socket.")
    var controlSocket: String = ControlProtocol.defaultSocketPath

    @Option(name: .long, help: "Name to register under.")
    var name: String = "splice-proxy"

    @Option(name: .long, help: "The port its transparent listener accepts on (reported to spliced).")
    var listenPort: UInt16?

    @Option(name: .long, help: "Seconds between heartbeats.")
    var heartbeat: Double = 1.0

    @Option(name: .long, help: "Write the proxy's pid to this file.")
    var pidfile: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard heartbeat >= 0.05 && heartbeat <= 60 else {
            throw ValidationError("--heartbeat must be between 0.05 and 60 seconds, not \(heartbeat)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(logLevel)'")
        }
        guard !name.isEmpty && name.count <= 64 else { throw ValidationError("--name must be 1 to 64 characters") }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "splice-proxy")
        signal(SIGPIPE, SIG_IGN)
        if let pidfile {
            let text = "\(getpid())\n"
            let fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if fd >= 0 { _ = write(fd, text, text.utf8.count); close(fd) }
        }
        let registration = ProxyRegistration(name: name, pid: getpid(), listenPort: listenPort)
        var backoff = 0.1
        while true {
            do {
                let client = try ControlClient(path: controlSocket)
                let reply = try client.request(ControlRequest(command: .register, proxy: registration))
                logger.info("registered with spliced", metadata: ["id": "\(reply.proxyID ?? -1)", "socket": "\(controlSocket)"])
                backoff = 0.1
                while true {
                    usleep(useconds_t(heartbeat * 1_000_000))
                    _ = try client.request(ControlRequest(command: .heartbeat))
                }
            } catch {
                logger.warning("control channel: \(error); retrying in \(backoff)s")
                usleep(useconds_t(backoff * 1_000_000))
                backoff = min(backoff * 2, 5)
            }
        }
    }
}

import Testing
import SpliceWire
@testable import SpliceEngine

/// A spliced flow's FINs skip the queue; the rules log a copy of their headers (NFLOG,
/// `install-rules.sh --fin-log-group`) and the table follows the flow's end from those copies
/// (`Engine.loggedFromSplicedFlow`, Splice/SpliceMode.swift).
extension RequestDecisionTests {
    /// Logs `packet` as NFLOG hands it over: its first `copied` bytes only (nil: all).
    func log(_ h: ResilientHarness, _ packet: [UInt8], copied: Int? = nil) {
        let room = UnsafeMutableRawBufferPointer.allocate(byteCount: Engine.scratchBytes, alignment: 16)
        defer { room.deallocate() }
        room.initializeMemory(as: UInt8.self, repeating: 0)
        let copy = Array(packet.prefix(copied ?? packet.count))
        copy.withUnsafeBytes { h.engine.loggedFromSplicedFlow($0, room: room, now: .seconds(1)) }
    }

    @Test("a spliced flow's logged FINs: the table follows its end from header copies, the queue never saw them")
    func loggedFINsEndASplicedFlow() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let request = Self.request(host: "a.example")
        _ = h.feed(clientData(h, payload: request))
        #expect(snapshot(h)?.mode == .spliced)
        let c = h.c
        let n = UInt32(request.count)
        // The server's last 300 bytes and its FIN in one segment, copied as far as its headers:
        // the FIN's place is read from the IP header's length, not from the copy.
        let serverFin = h.endPacket(fromClient: false, flags: [.fin, .ack, .psh], seq: c.serverISN + 1, ack: c.clientISN + 1 + n,
                                    window: 3000, ts: TCPTimestamps(value: 90101, echo: 5101),
                                    payload: [UInt8](repeating: 0x42, count: 300))
        let headers = serverFin.count - 300
        log(h, serverFin, copied: headers)
        #expect(snapshot(h)?.state == .finWait)
        #expect(block(h)?.pointee.ends.reply.finSeq == c.serverISN + 1 + 300)
        #expect(h.engine.counters.splices.finsLogged == 1)
        // The client's FIN (whole copy): both FINs went by, the flow is over for the table.
        let clientFin = h.endPacket(fromClient: true, flags: [.fin, .ack], seq: c.clientISN + 1 + n, ack: c.serverISN + 302,
                                    window: 600, ts: TCPTimestamps(value: 5103, echo: 90101))
        log(h, clientFin)
        #expect(snapshot(h)?.state == .timeWait)
        #expect(h.engine.counters.splices.finsLogged == 2)
        // Neither reached the queue's path; nothing was injected.
        #expect(h.engine.counters.splices.packetsAfterSplice == 0)
        #expect(h.injector.packets.isEmpty && h.injector.splicing.isEmpty)
        // Copies of anything else are ignored: the FIN again (the flow is closed), a pure ACK,
        // a FIN of a flow not in the table, bytes that are no packet.
        log(h, clientFin)
        log(h, h.endPacket(fromClient: true, flags: .ack, seq: c.clientISN + 2 + n, ack: c.serverISN + 302))
        let stranger = TCPPacketSpec(source: c.client, destination: c.server, sourcePort: c.clientPort &+ 1,
                                     destinationPort: c.serverPort, sequenceNumber: SeqNumber(7),
                                     acknowledgmentNumber: SeqNumber(9), flags: [.fin, .ack], window: 100, payload: []).bytes()
        log(h, stranger)
        log(h, [0x45, 0x00, 0x00])
        log(h, Array(serverFin.prefix(10)))
        #expect(h.engine.counters.splices.finsLogged == 2)
        #expect(h.engine.counters.splices.logsIgnored == 5)
        #expect(snapshot(h)?.state == .timeWait)
    }

    @Test("a logged FIN of a flow that is not spliced (resilient, awaiting its request) changes nothing")
    func loggedFINOfAnUnsplicedFlowIsIgnored() {
        let h = ResilientHarness()
        h.engine.rules = Self.hostRules()
        awaitRequest(h)
        let fin = clientData(h, payload: [], flags: [.fin, .ack])
        log(h, fin)
        #expect(snapshot(h)?.state == .established)
        #expect(h.phase == .awaitingRequest)
        #expect(h.engine.counters.splices.finsLogged == 0 && h.engine.counters.splices.logsIgnored == 1)
    }
}

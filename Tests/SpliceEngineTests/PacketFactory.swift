import SpliceWire
@testable import SpliceEngine

/// Builds the packets of a client/server conversation for engine tests.
struct Conversation {
    var client = IPAddress("10.0.1.2")!
    var server = IPAddress("10.0.2.2")!
    var clientPort: UInt16 = 40000
    var serverPort: UInt16 = 80
    var clientISN = SeqNumber(1000)
    var serverISN = SeqNumber(0xffff_fff0)   // wraps during the test

    func packet(fromClient: Bool, flags: TCPFlags, seq: SeqNumber, ack: SeqNumber = SeqNumber(0),
                options: SynOptions? = nil, payload: Int = 0) -> [UInt8] {
        var spec = TCPPacketSpec(source: fromClient ? client : server, destination: fromClient ? server : client,
                                 sourcePort: fromClient ? clientPort : serverPort,
                                 destinationPort: fromClient ? serverPort : clientPort,
                                 sequenceNumber: seq, acknowledgmentNumber: ack, flags: flags,
                                 payload: [UInt8](repeating: 0x61, count: payload))
        if let options { spec.setSynOptions(options) }
        return spec.bytes()
    }

    var syn: [UInt8] {
        packet(fromClient: true, flags: .syn, seq: clientISN,
               options: SynOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                   timestamps: TCPTimestamps(value: 100, echo: 0)))
    }
    var synAck: [UInt8] {
        packet(fromClient: false, flags: [.syn, .ack], seq: serverISN, ack: clientISN + 1,
               options: SynOptions(maximumSegmentSize: 1400, windowScale: 9, sackPermitted: false, timestamps: nil))
    }
    var ack: [UInt8] { packet(fromClient: true, flags: .ack, seq: clientISN + 1, ack: serverISN + 1) }
}

extension Engine {
    @discardableResult
    func feed(_ bytes: [UInt8], at seconds: Double = 0, info: PacketInfo = PacketInfo()) -> Verdict {
        var copy = bytes
        return copy.withUnsafeMutableBytes { process($0, info: info, now: .seconds(seconds)) }
    }
}

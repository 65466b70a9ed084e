// Bytes per flow of the flow table, measured: resident memory before and after filling a
// table with flows, each with its connection block (an open connection), then with the blocks
// released (TIME_WAIT: entry alone). Prints the figures and the layout they come from.
//
//   swift run -c release FlowTableMemory [flows]      (from Benchmarks/)
#if canImport(Glibc)
import Glibc
#endif
import SpliceEngine
import SpliceWire

func residentBytes() -> Int {
    guard let f = fopen("/proc/self/status", "r") else { return 0 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("VmRSS:") {
            let kb = s.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
            return kb * 1024
        }
    }
    return 0
}

let flows = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1_000_000 : 1_000_000
let rss0 = residentBytes()
let table = FlowTable(capacity: flows, blockCapacity: flows, seed: 42)
let rssEmpty = residentBytes()
var rng = SystemRandomNumberGenerator()
var ids: [UInt32] = []
ids.reserveCapacity(flows)
let rssIds = residentBytes()
for i in 0..<flows {
    let client = IPAddress(ipv4: 0x0a00_0000 | UInt32(truncatingIfNeeded: rng.next() & 0x00ff_ffff))
    let server = IPAddress(ipv4: 0xc000_0200 | UInt32(i & 0xff))
    guard let e = table.insert(initiator: client, port: UInt16(truncatingIfNeeded: 1024 + i % 60000),
                               responder: server, port: 443, now: Timestamp(deciseconds: 0)) else { continue }
    table[e].state = .established
    table.attachBlock(e)
    ids.append(e)
}
let rssOpen = residentBytes()
for e in ids {
    table[e].state = .timeWait
    table.releaseBlock(e)
}
let m = table.memory
let n = Double(table.count)
let opened = Double(rssOpen - rssIds) / n
print("flows: \(table.count) (capacity \(flows))")
print("layout: entry \(m.entryBytes) B, connection block \(m.blockBytes) B, index \(m.indexBytes / flows) B per flow of capacity (8-byte slots, load <= 0.5)")
print("reserved for the whole capacity: \(m.reservedBytes / flows) B per flow (address space; resident only when touched)")
print("resident after creating the empty table: \(rssEmpty - rss0) B (the index, zero pages, is not touched until used)")
print("resident per open flow (entry + block + index), measured: \((opened * 10).rounded() / 10) B")
print("computed per open flow: \(m.entryBytes + m.blockBytes + m.indexBytes / flows) B; per TIME_WAIT flow (block released): \(m.entryBytes + m.indexBytes / flows) B")

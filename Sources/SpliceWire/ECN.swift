/// The ECN field of an IP header: its codepoints (RFC 3168 section 5).
public enum ECN {
    /// The field's bits in the TOS byte or the traffic class.
    public static let mask: UInt8 = 0b11
    /// Not ECN-capable transport.
    public static let notECT: UInt8 = 0
    /// ECN-capable transport, ECT(1) and ECT(0).
    public static let ect1: UInt8 = 1
    public static let ect0: UInt8 = 2
    /// Congestion experienced.
    public static let ce: UInt8 = 3
}
